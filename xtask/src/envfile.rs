//! Per-service `.env` files holding the secret values: mode 0600, ignored by git, values
//! generated once and never regenerated or printed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::model::{Model, Service, Status};
use crate::{redact, secrets};

pub fn path(s: &Service) -> PathBuf {
    s.dir.join(".env")
}

/// `KEY=VALUE` lines; comments and blank lines are skipped. Values are taken literally (the
/// format docker's `--env-file` reads).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

/// Reads a service's `.env` (empty when there is none) and registers its values with the
/// redactor.
pub fn read(s: &Service) -> Result<BTreeMap<String, String>> {
    let p = path(s);
    let values = match fs::read_to_string(&p) {
        Ok(t) => parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
    };
    for v in values.values() {
        redact::add(v);
    }
    Ok(values)
}

/// Every current secret value of the workspace, for the redactor and the leak checks.
pub fn all_values(model: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for s in &model.services {
        if let Ok(values) = read(s) {
            out.extend(values.into_values().filter(|v| v.len() >= 6));
        }
    }
    out
}

/// Writes `text` to `path` with mode 0600 atomically: a temp file beside it, then a rename, so
/// an interrupted run leaves the old file or the new one, never half of one.
pub fn write_private_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

#[derive(Debug, Default)]
pub struct Report {
    /// `service: NAME` for each generated secret (names only, never values).
    pub generated: Vec<String>,
    pub kept: usize,
    /// Required-from-environment secrets that are set nowhere, with where to set them.
    pub missing: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Makes sure every active service's declared secrets exist in its `.env`.
pub fn ensure(model: &Model) -> Result<Report> {
    let mut report = Report::default();
    for s in &model.services {
        if s.spec.status != Status::Active || s.spec.secrets.is_empty() {
            continue;
        }
        let p = path(s);
        // Leftover temp files of an interrupted run are just removed.
        if let Ok(rd) = fs::read_dir(&s.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".env.tmp.") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let existing_text = fs::read_to_string(&p).unwrap_or_default();
        let existing = read(s)?;
        let mut text = existing_text.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for sec in &s.spec.secrets {
            if existing.get(&sec.name).is_some_and(|v| !v.is_empty()) {
                report.kept += 1;
                continue;
            }
            match sec.generate {
                Some(kind) => {
                    let v = secrets::generate(kind)?;
                    redact::add(&v);
                    text.push_str(&format!("{}={v}\n", sec.name));
                    report.generated.push(format!("{}: {}", s.name, sec.name));
                }
                None => {
                    if std::env::var_os(&sec.name).is_none() && !sec.optional {
                        let help = sec
                            .help
                            .as_deref()
                            .map(|h| format!(" ({h})"))
                            .unwrap_or_default();
                        report.missing.push(format!(
                            "{} for {}: set it in {} or in the environment{help}",
                            sec.name,
                            s.name,
                            rel(model, &p)
                        ));
                    }
                }
            }
        }
        if text != existing_text || !p.exists() {
            write_private_atomic(&p, &text)?;
        } else {
            // An existing file keeps its values but not lax permissions.
            let mode = fs::metadata(&p)?.permissions().mode() & 0o777;
            if mode != 0o600 {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
            }
        }
        ensure_ignored(model, &p)?;
        report.files.push(p);
    }
    Ok(report)
}

fn rel(model: &Model, p: &Path) -> String {
    p.strip_prefix(&model.root)
        .unwrap_or(p)
        .display()
        .to_string()
}

/// A secret file git would pick up is a leak waiting to happen: refuse to leave it so.
fn ensure_ignored(model: &Model, p: &Path) -> Result<()> {
    let Ok(repo) = git2::Repository::discover(&model.root) else {
        return Ok(());
    };
    let Some(work) = repo.workdir() else {
        return Ok(());
    };
    let work = work.canonicalize()?;
    let abs = p.canonicalize()?;
    let Ok(rel) = abs.strip_prefix(&work) else {
        return Ok(());
    };
    if !repo.is_path_ignored(rel).unwrap_or(false) {
        bail!(
            "{} is not ignored by git; add `.env` to the workspace's .gitignore",
            rel.display()
        );
    }
    Ok(())
}

/// A service's environment with `${NAME}` / `${service.NAME}` filled in from `values` (keyed by
/// service and secret name), in the env-file format docker reads (`KEY=VALUE`, literal values).
/// A missing optional secret becomes empty; a line break cannot be carried and is an error.
pub fn render_env(s: &Service, values: &BTreeMap<(String, String), String>) -> Result<String> {
    let mut text = String::new();
    for (k, v) in s.spec.run.iter().flat_map(|r| &r.env) {
        let mut out = String::new();
        let mut rest = v.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let inner = &after[..end];
            let key = match inner.split_once('.') {
                Some((svc, name)) => (svc.to_string(), name.to_string()),
                None => (s.name.clone(), inner.to_string()),
            };
            out.push_str(values.get(&key).map(String::as_str).unwrap_or(""));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        if out.contains('\n') || out.contains('\r') {
            bail!(
                "`{}`: the value of {k} contains a line break, which an env file cannot carry",
                s.name
            );
        }
        text.push_str(&format!("{k}={out}\n"));
    }
    Ok(text)
}

/// The current secret values of `services` from their `.env` files (and, for secrets required
/// from the environment, the process environment), keyed by (service, name).
pub fn values_for(
    model: &Model,
    services: &[&Service],
) -> Result<BTreeMap<(String, String), String>> {
    let _ = model;
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for s in services {
        let file = read(s)?;
        for sec in &s.spec.secrets {
            let v = file
                .get(&sec.name)
                .filter(|v| !v.is_empty())
                .cloned()
                .or_else(|| std::env::var(&sec.name).ok().filter(|v| !v.is_empty()));
            match v {
                Some(v) => {
                    redact::add(&v);
                    out.insert((s.name.clone(), sec.name.clone()), v);
                }
                None if sec.optional => {}
                None => missing.push(format!(
                    "{} of {} ({})",
                    sec.name,
                    s.name,
                    path(s).display()
                )),
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "secrets not set: {}; `cargo xtask onboard` generates the generated ones",
            missing.join(", ")
        );
    }
    Ok(out)
}
