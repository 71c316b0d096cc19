//! The descriptor model: load every descriptor of a workspace, validate it as a whole, and hand
//! out typed, cross-referenced services, hosts and libraries.

pub mod diag;
pub mod schema;
mod validate;

use std::fmt;
use std::fs;
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
    /// Services and libraries whose descriptor exists but did not parse: already reported, so
    /// references to them are not reported again as unknown.
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
            Err(_) => {
                diags.push(
                    Diagnostic::new(rel, "file is not valid UTF-8").expected("a UTF-8 TOML file"),
                );
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
            let mut span = e.span();
            let mut key = span.as_ref().and_then(|s| doc.key_at(s.start));
            // serde reports an unknown field at its table; point at the field itself.
            if let (Some(field), Some(found)) = (unknown_field(e.message()), key.as_ref()) {
                let path = if found == field || found.ends_with(&format!(".{field}")) {
                    found.clone()
                } else {
                    format!("{found}.{field}")
                };
                if let Some(s) = doc.locate(&diag::key_path(&path)) {
                    span = Some(s);
                    key = Some(path);
                }
            }
            diags.push(Diagnostic {
                file: doc.rel.clone(),
                key,
                span,
                message: e.message().trim_end().to_string(),
                expected: None,
            });
            docs.push(doc);
            None
        }
    }
}

/// The field name of serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}
