//! Diagnostics in the style of rustc: file, line, column, the key, the offending line with a
//! caret under the span, and what was expected.

use std::fmt::Write as _;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One descriptor file's text, kept so errors can show the offending line.
#[derive(Debug)]
pub struct Doc {
    /// Path relative to the workspace root, with `/` separators (what errors print).
    pub rel: String,
    pub text: String,
}

/// A step in a key path: `run.ports[1].host` is `[Key("run"), Key("ports"), Index(1), Key("host")]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Builds a key path from a dotted notation with `[n]` indexes: `"run.ports[1].host"`.
pub fn key_path(dotted: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in dotted.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Seg::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..close].parse() {
                    out.push(Seg::Index(i));
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

impl Doc {
    /// The span of the value at `path`, or of the deepest part of the path that exists (so a
    /// missing key points at its table). `None` when the text does not parse.
    pub fn locate(&self, path: &[Seg]) -> Option<Range<usize>> {
        let root = DeTable::parse(&self.text).ok()?;
        let mut best = None;
        let mut table = Some(root.get_ref());
        let mut array = None;
        for seg in path {
            let next: &Spanned<DeValue<'_>> = match seg {
                Seg::Key(k) => match table.and_then(|t| t.get_key_value(k.as_str())) {
                    Some((key, value)) => {
                        best = Some(key.span());
                        value
                    }
                    None => break,
                },
                Seg::Index(i) => match array.and_then(|a: &toml::de::DeArray<'_>| a.get(*i)) {
                    Some(value) => value,
                    None => break,
                },
            };
            // A table opened by a `[header]` spans nothing useful: keep pointing at its key.
            match next.get_ref() {
                DeValue::Table(t) => {
                    table = Some(t);
                    array = None;
                    if matches!(seg, Seg::Index(_)) && !next.span().is_empty() {
                        best = Some(next.span());
                    }
                }
                DeValue::Array(a) => {
                    array = Some(a);
                    table = None;
                    best = Some(next.span());
                }
                _ => {
                    table = None;
                    array = None;
                    best = Some(next.span());
                }
            }
        }
        best
    }

    /// The dotted key path whose key or value contains `offset`, for errors that come with a
    /// span but no key (serde's).
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let root = DeTable::parse(&self.text).ok()?;
        let mut path = String::new();
        walk_table(root.get_ref(), offset, &mut path);
        (!path.is_empty()).then_some(path)
    }

    /// The value at `path` (`""` is the whole file) and everything inside it, in document
    /// order, the value itself first; empty when the path does not exist. Serde names only the
    /// table or array it was reading when something inside it is wrong (checks, an internally
    /// tagged enum, lose even that); this lets the caller find the key or value it means.
    pub fn nodes(&self, path: &str) -> Vec<Node> {
        let Ok(root) = DeTable::parse(&self.text) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let segs = key_path(path);
        if segs.is_empty() {
            out.push(Node {
                path: String::new(),
                key: None,
                value: 0..self.text.len(),
                shape: Shape::Table,
                unexpected: Some("map".to_string()),
            });
            collect_table(root.get_ref(), "", &mut out);
        } else {
            let Some((key, value)) = find(root.get_ref(), &segs) else {
                return Vec::new();
            };
            out.push(node(path.to_string(), key, value));
            collect(value, path, &mut out);
        }
        out[1..].sort_by_key(|n| n.key.as_ref().unwrap_or(&n.value).start);
        out
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Workspace-relative file, or empty for errors about the workspace as a whole.
    pub file: String,
    /// Dotted key path (`run.ports[1].host`), if the error is about a key.
    pub key: Option<String>,
    pub span: Option<Range<usize>>,
    pub message: String,
    /// What would have been accepted.
    pub expected: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            key: None,
            span: None,
            message: message.into(),
            expected: None,
        }
    }

    /// An error about `key` in `doc`, located by the key path.
    pub fn at(doc: &Doc, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: doc.rel.clone(),
            key: Some(key.to_string()),
            span: doc.locate(&key_path(key)),
            message: message.into(),
            expected: None,
        }
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Diagnostic {
        self.expected = Some(expected.into());
        self
    }

    /// Renders the diagnostic; `doc` must be the file it names (or `None`).
    pub fn render(&self, doc: Option<&Doc>) -> String {
        let mut out = format!("error: {}\n", self.message);
        let key = self
            .key
            .as_ref()
            .map(|k| format!(" (key `{k}`)"))
            .unwrap_or_default();
        match (doc, &self.span) {
            (Some(doc), Some(span)) => {
                let (line, col) = doc.line_col(span.start);
                let _ = writeln!(out, "  --> {}:{line}:{col}{key}", self.file);
                let text = doc.text.lines().nth(line - 1).unwrap_or("");
                let gutter = line.to_string().len();
                let pad = " ".repeat(gutter);
                // Underline to the end of the span or of the line, whichever comes first.
                let span_text = &doc.text[span.start..span.end.min(doc.text.len())];
                let first_line = span_text.split('\n').next().unwrap_or("");
                let width = first_line.chars().count().max(1);
                let _ = writeln!(out, " {pad} |");
                let _ = writeln!(out, " {line} | {text}");
                let caret_pad = " ".repeat(col - 1);
                let carets = "^".repeat(width);
                match &self.expected {
                    Some(e) => {
                        let _ = writeln!(out, " {pad} | {caret_pad}{carets} expected {e}");
                    }
                    None => {
                        let _ = writeln!(out, " {pad} | {caret_pad}{carets}");
                    }
                }
            }
            _ => {
                if !self.file.is_empty() {
                    let _ = writeln!(out, "  --> {}{key}", self.file);
                }
                if let Some(e) = &self.expected {
                    let _ = writeln!(out, "   = expected {e}");
                }
            }
        }
        out
    }
}

/// A value somewhere in a document, found by [`Doc::nodes`].
#[derive(Debug, Clone)]
pub struct Node {
    /// Dotted key path (`smoke[1].port`).
    pub path: String,
    /// The span of its key; `None` for array elements.
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
    pub shape: Shape,
    /// How serde describes the value in an "invalid type" error: `string "80"`, `integer `5``.
    pub unexpected: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Table,
    Array,
    Scalar,
}

/// The key span (for a key step) and value at `path` below `table`.
fn find<'a, 'i>(
    table: &'a DeTable<'i>,
    path: &[Seg],
) -> Option<(Option<Range<usize>>, &'a Spanned<DeValue<'i>>)> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (key, mut value) = table.get_key_value(first.as_str())?;
    let mut key_span = Some(key.span());
    for seg in rest {
        value = match (seg, value.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => {
                let (key, v) = t.get_key_value(k.as_str())?;
                key_span = Some(key.span());
                v
            }
            (Seg::Index(i), DeValue::Array(a)) => {
                key_span = None;
                a.get(*i)?
            }
            _ => return None,
        };
    }
    Some((key_span, value))
}

fn node(path: String, key: Option<Range<usize>>, value: &Spanned<DeValue<'_>>) -> Node {
    let (shape, unexpected) = match value.get_ref() {
        DeValue::Table(_) => (Shape::Table, Some("map".to_string())),
        DeValue::Array(_) => (Shape::Array, Some("sequence".to_string())),
        DeValue::String(s) => (Shape::Scalar, Some(format!("string {:?}", s.as_ref()))),
        DeValue::Integer(i) => (
            Shape::Scalar,
            i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| format!("integer `{n}`")),
        ),
        DeValue::Float(f) => (
            Shape::Scalar,
            f.as_str().parse::<f64>().ok().map(|f| {
                // serde writes `1.0`, not `1`.
                let mut text = f.to_string();
                if f.is_finite() && !text.contains(['.', 'e']) {
                    text.push_str(".0");
                }
                format!("floating point `{text}`")
            }),
        ),
        DeValue::Boolean(b) => (Shape::Scalar, Some(format!("boolean `{b}`"))),
        DeValue::Datetime(_) => (Shape::Scalar, None),
    };
    Node {
        path,
        key,
        value: value.span(),
        shape,
        unexpected,
    }
}

fn collect(value: &Spanned<DeValue<'_>>, path: &str, out: &mut Vec<Node>) {
    match value.get_ref() {
        DeValue::Table(t) => collect_table(t, path, out),
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(node(p.clone(), None, v));
                collect(v, &p, out);
            }
        }
        _ => {}
    }
}

fn collect_table(table: &DeTable<'_>, path: &str, out: &mut Vec<Node>) {
    for (k, v) in table.iter() {
        let p = if path.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{path}.{}", k.get_ref())
        };
        out.push(node(p.clone(), Some(k.span()), v));
        collect(v, &p, out);
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table.iter() {
        let in_key = contains(&key.span(), offset);
        let in_value = contains(&value.span(), offset);
        // Tables opened by headers have spans covering their body; descend into any table or
        // array to find the deepest match.
        let descend = match value.get_ref() {
            DeValue::Table(t) => table_contains(t, offset),
            DeValue::Array(a) => a
                .iter()
                .any(|v| contains(&v.span(), offset) || value_contains(v, offset)),
            _ => false,
        };
        if in_key || in_value || descend {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !in_key {
                walk_value(value, offset, path);
            }
            return;
        }
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if contains(&v.span(), offset) || value_contains(v, offset) {
                    path.push_str(&format!("[{i}]"));
                    walk_value(v, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

fn value_contains(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => table_contains(t, offset),
        DeValue::Array(a) => a
            .iter()
            .any(|v| contains(&v.span(), offset) || value_contains(v, offset)),
        _ => contains(&value.span(), offset),
    }
}

fn table_contains(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(k, v)| {
        contains(&k.span(), offset) || contains(&v.span(), offset) || value_contains(v, offset)
    })
}
