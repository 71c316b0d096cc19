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
