//! The descriptor model: load every descriptor of a workspace, validate it as a whole, and hand
//! out typed, cross-referenced services, hosts and libraries.

pub mod diag;
pub mod schema;
mod validate;

use std::fmt;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use diag::{Diagnostic, Doc};
pub use schema::*;

#[derive(Debug)]
pub struct Service {
    pub name: String,
    /// `services/NAME`, absolute.
    pub dir: PathBuf,
    pub doc: usize,
    pub spec: ServiceFile,
}

#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub doc: usize,
    pub spec: HostFile,
}

#[derive(Debug)]
pub struct Lib {
    pub name: String,
    pub doc: usize,
    pub spec: LibFile,
}

/// A validated workspace. Everything in it has passed `validate`.
#[derive(Debug)]
pub struct Model {
    pub root: PathBuf,
    pub docs: Vec<Doc>,
    pub services: Vec<Service>,
    pub hosts: Vec<Host>,
    pub libs: Vec<Lib>,
    /// Services and libraries whose directory exists but whose descriptor is missing or did not
    /// parse: already reported, so references to them are not reported again as unknown.
    pub unparsed: Vec<String>,
}

impl Model {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
    pub fn lib(&self, name: &str) -> Option<&Lib> {
        self.libs.iter().find(|l| l.name == name)
    }
    /// Hosts whose descriptor lists the service.
    pub fn hosts_of(&self, service: &str) -> Vec<&Host> {
        self.hosts
            .iter()
            .filter(|h| h.spec.services.iter().any(|s| s == service))
            .collect()
    }
    pub fn hosts_of_lib(&self, lib: &str) -> Vec<&Host> {
        self.hosts
            .iter()
            .filter(|h| h.spec.libs.iter().any(|s| s == lib))
            .collect()
    }
}

/// Everything wrong with a workspace, with the files' text to show the offending lines.
#[derive(Debug)]
pub struct LoadErrors {
    pub docs: Vec<Doc>,
    pub diags: Vec<Diagnostic>,
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diags {
            let doc = self.docs.iter().find(|doc| doc.rel == d.file);
            writeln!(f, "{}", d.render(doc))?;
        }
        let n = self.diags.len();
        write!(
            f,
            "error: the workspace has {n} error{}",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for LoadErrors {}

/// [`load`] for a command: the errors go to stderr (the command then exits 1).
pub fn load_reported(root: &Path) -> Option<Model> {
    load(root).map_err(|errors| eprintln!("{errors}")).ok()
}

/// Loads and validates the workspace at `root`. Collects every error rather than the first.
pub fn load(root: &Path) -> Result<Model, LoadErrors> {
    let mut docs = Vec::new();
    let mut diags = Vec::new();
    let mut unparsed = Vec::new();

    let services = load_dir::<ServiceFile>(
        root,
        "services",
        "service.toml",
        &mut docs,
        &mut diags,
        &mut unparsed,
    )
    .into_iter()
    .map(|(name, dir, doc, spec)| Service {
        name,
        dir,
        doc,
        spec,
    })
    .collect();
    let libs = load_dir::<LibFile>(
        root,
        "libs",
        "lib.toml",
        &mut docs,
        &mut diags,
        &mut unparsed,
    )
    .into_iter()
    .map(|(name, _dir, doc, spec)| Lib { name, doc, spec })
    .collect();
    let hosts = load_hosts(root, &mut docs, &mut diags);

    let model = Model {
        root: root.to_path_buf(),
        docs,
        services,
        hosts,
        libs,
        unparsed,
    };
    validate::validate(&model, &mut diags);
    if diags.is_empty() {
        Ok(model)
    } else {
        Err(LoadErrors {
            docs: model.docs,
            diags,
        })
    }
}

/// Sorted entries of a directory; a missing directory is an empty workspace part.
fn entries(dir: &Path, diags: &mut Vec<Diagnostic>, rel: &str) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in read {
        match entry {
            Ok(e) => {
                let name = e.file_name().to_string_lossy().into_owned();
                out.push((name, e.path()));
            }
            Err(e) => diags.push(Diagnostic::new(rel, format!("cannot list {rel}: {e}"))),
        }
    }
    out.sort();
    out
}

fn load_dir<T: DeserializeOwned>(
    root: &Path,
    part: &str,
    file: &str,
    docs: &mut Vec<Doc>,
    diags: &mut Vec<Diagnostic>,
    unparsed: &mut Vec<String>,
) -> Vec<(String, PathBuf, usize, T)> {
    let mut out = Vec::new();
    for (name, dir) in entries(&root.join(part), diags, part) {
        if name.starts_with('.') || !dir.is_dir() {
            continue;
        }
        let rel = format!("{part}/{name}/{file}");
        if !validate::is_name(&name) {
            diags.push(
                Diagnostic::new(
                    format!("{part}/{name}"),
                    format!("invalid directory name `{name}`"),
                )
                .expected(validate::NAME_RULE),
            );
            continue;
        }
        let path = dir.join(file);
        if !path.is_file() {
            diags.push(
                Diagnostic::new(
                    format!("{part}/{name}"),
                    format!("{part}/{name} has no {file}"),
                )
                .expected(format!("a descriptor at {rel}")),
            );
            unparsed.push(name);
            continue;
        }
        match parse::<T>(&path, rel, docs, diags) {
            Some((doc, spec)) => out.push((name, dir, doc, spec)),
            None => unparsed.push(name),
        }
    }
    out
}

fn load_hosts(root: &Path, docs: &mut Vec<Doc>, diags: &mut Vec<Diagnostic>) -> Vec<Host> {
    let mut out = Vec::new();
    for (file, path) in entries(&root.join("hosts"), diags, "hosts") {
        let Some(name) = file.strip_suffix(".toml") else {
            continue;
        };
        let rel = format!("hosts/{file}");
        if !validate::is_name(name) {
            diags.push(
                Diagnostic::new(rel, format!("invalid host file name `{file}`"))
                    .expected(format!("NAME.toml where NAME is {}", validate::NAME_RULE)),
            );
            continue;
        }
        if let Some((doc, spec)) = parse::<HostFile>(&path, rel, docs, diags) {
            out.push(Host {
                name: name.to_string(),
                doc,
                spec,
            });
        }
    }
    out
}

fn parse<T: DeserializeOwned>(
    path: &Path,
    rel: String,
    docs: &mut Vec<Doc>,
    diags: &mut Vec<Diagnostic>,
) -> Option<(usize, T)> {
    let text = match fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Show the line with the first bad byte; the text is lossy from there on.
                let at = e.utf8_error().valid_up_to();
                let byte = e.as_bytes()[at];
                let doc = Doc {
                    rel,
                    text: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                };
                diags.push(Diagnostic {
                    file: doc.rel.clone(),
                    key: None,
                    span: Some(at..at + char::REPLACEMENT_CHARACTER.len_utf8()),
                    message: format!("file is not valid UTF-8 (byte 0x{byte:02x})"),
                    expected: Some("a UTF-8 TOML file".to_string()),
                });
                docs.push(doc);
                return None;
            }
        },
        Err(e) => {
            diags.push(Diagnostic::new(rel, format!("cannot read: {e}")));
            return None;
        }
    };
    let doc = Doc { rel, text };
    let result = toml::from_str::<T>(&doc.text);
    let index = docs.len();
    match result {
        Ok(spec) => {
            docs.push(doc);
            Some((index, spec))
        }
        Err(e) => {
            diags.push(parse_error::<T>(&doc, e.span(), e.message().trim_end()));
            docs.push(doc);
            None
        }
    }
}

/// Locates a parse error. Serde often names only the table or array it was reading (and inside
/// an internally tagged enum such as a check, only the whole array): narrow that down to the
/// element, key or value the message is about.
fn parse_error<T: DeserializeOwned>(
    doc: &Doc,
    span: Option<Range<usize>>,
    message: &str,
) -> Diagnostic {
    let mut d = locate_parse_error::<T>(doc, span, message);
    // "unknown field `x`, expected one of ...": the expectation goes under the caret.
    if d.expected.is_none() {
        if let Some(at) = d.message.rfind(", expected ") {
            let expected = d.message[at + ", expected ".len()..].to_string();
            d.message.truncate(at);
            d.expected = Some(plain_type(&expected));
        }
    }
    // A TOML file has keys and values, not fields and variants.
    for (serde, toml) in [
        ("unknown field `", "unknown key `"),
        ("missing field `", "missing key `"),
        ("unknown variant `", "unknown value `"),
    ] {
        if let Some(rest) = d.message.strip_prefix(serde) {
            d.message = format!("{toml}{rest}");
        }
    }
    d
}

/// Rust type names in serde's messages, in the words of a TOML file.
fn plain_type(expected: &str) -> String {
    match expected {
        "u8" => "an integer from 0 to 255".to_string(),
        "u16" => "an integer from 0 to 65535".to_string(),
        "u32" | "u64" | "usize" => "a non-negative integer".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        _ if expected.starts_with("struct ") || expected.starts_with("internally tagged") => {
            "a table".to_string()
        }
        _ => expected.to_string(),
    }
}

fn locate_parse_error<T: DeserializeOwned>(
    doc: &Doc,
    span: Option<Range<usize>>,
    message: &str,
) -> Diagnostic {
    let mut d = Diagnostic {
        file: doc.rel.clone(),
        key: None,
        span,
        message: message.to_string(),
        expected: None,
    };
    let Some(span) = d.span.clone() else {
        return d;
    };
    if message == "duplicate key" {
        if let Some(name) = doc.text.get(span).filter(|n| !n.contains('\n')) {
            d.message = format!("duplicate key `{name}`");
        }
        d.expected = Some("each key and table defined once".to_string());
        return d;
    }
    if toml::de::DeTable::parse(&doc.text).is_err() {
        // A syntax error: there are no keys to name.
        return d;
    }
    // The key or table serde was reading; an empty span at the start is the top-level table.
    let mut at = if span.is_empty() && span.start == 0 {
        String::new()
    } else {
        doc.key_at(span.start).unwrap_or_default()
    };

    // An array of tables: find the element that fails on its own.
    let shape = doc.nodes(&at).first().map(|n| n.shape);
    let array = match shape {
        Some(diag::Shape::Array) => Some(at.clone()),
        _ if at.ends_with(']') => at.rfind('[').map(|i| at[..i].to_string()),
        _ => None,
    };
    if let Some(array) = array {
        if let Some(i) = failing_element::<T>(&doc.text, &array, message) {
            at = format!("{array}[{i}]");
            d.span = doc.locate(&diag::key_path(&at)).or(d.span);
        }
    }
    let join = |field: &str| {
        if at.is_empty() {
            field.to_string()
        } else {
            format!("{at}.{field}")
        }
    };

    if let Some(field) = quoted(message, "missing field `") {
        let key = join(field);
        if at.is_empty() {
            d.span = None;
            d.expected = Some(format!("a `{field}` key at the top level"));
        } else {
            // The span stays on the table (its header, or the inline table).
            d.expected = Some(format!("a `{field}` key in `{at}`"));
        }
        d.key = Some(key);
        return d;
    }
    let nodes = doc.nodes(&at);
    if let Some(field) = quoted(message, "unknown field `") {
        // Point at the key itself, wherever inside `at` it is.
        let suffix = format!(".{field}");
        match nodes
            .iter()
            .find(|n| n.key.is_some() && (n.path == field || n.path.ends_with(&suffix)))
        {
            Some(n) => {
                d.key = Some(n.path.clone());
                d.span = n.key.clone();
            }
            None => {
                let key = join(field);
                d.span = doc.locate(&diag::key_path(&key)).or(d.span);
                d.key = Some(key);
            }
        }
        return d;
    }
    // "invalid type: string "80", expected u16": find that value inside `at`.
    let unexpected = quoted(message, "unknown variant `")
        .map(|v| format!("string {v:?}"))
        .or_else(|| {
            let rest = message
                .strip_prefix("invalid type: ")
                .or_else(|| message.strip_prefix("invalid value: "))?;
            Some(rest[..rest.find(", expected ")?].to_string())
        });
    if let (Some(unexpected), Some((first, inner))) = (unexpected, nodes.split_first()) {
        if first.shape != diag::Shape::Scalar && first.unexpected.as_ref() != Some(&unexpected) {
            if let Some(n) = inner
                .iter()
                .find(|n| n.unexpected.as_ref() == Some(&unexpected))
            {
                d.key = Some(n.path.clone());
                d.span = Some(n.value.clone());
                return d;
            }
        }
    }
    d.key = (!at.is_empty()).then_some(at);
    d
}

/// The index of the first element of the array at `array` that makes deserializing fail with
/// `message` when it is the array's only element; `None` unless the elements are tables.
fn failing_element<T: DeserializeOwned>(text: &str, array: &str, message: &str) -> Option<usize> {
    let root: toml::Table = toml::from_str(text).ok()?;
    let path = diag::key_path(array);
    let mut probe = root.clone();
    let items = value_at(&mut probe, &path)?.as_array()?;
    if !items.iter().all(toml::Value::is_table) {
        return None;
    }
    (0..items.len()).find(|&i| {
        let mut one = root.clone();
        let Some(toml::Value::Array(items)) = value_at(&mut one, &path) else {
            return false;
        };
        *items = vec![items[i].clone()];
        toml::Value::Table(one)
            .try_into::<T>()
            .is_err_and(|e| e.message().trim_end() == message)
    })
}

fn value_at<'a>(table: &'a mut toml::Table, path: &[diag::Seg]) -> Option<&'a mut toml::Value> {
    let (diag::Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut value = table.get_mut(first.as_str())?;
    for seg in rest {
        value = match seg {
            diag::Seg::Key(k) => value.get_mut(k.as_str())?,
            diag::Seg::Index(i) => value.get_mut(*i)?,
        };
    }
    Some(value)
}

/// The name in serde's "unknown field `x`, expected ..." and similar messages.
fn quoted<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    Some(&rest[..rest.find('`')?])
}
