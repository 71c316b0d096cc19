//! Hosts whose services are not containers: on `local`, MCP stdio servers are registered with
//! the desktop MCP client (their entries merged into its config, every other entry kept); on
//! `github-actions`, workflow services become workflow files in the component's checkout.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::desired::{Desired, DesiredFile};
use crate::model::{Host, Model, ServiceKind, Status};
use crate::{envfile, render, sources};

pub const MCP_CONFIG: &str = "MCP client config";
pub const WORKFLOW: &str = "workflow";

fn mcp_services<'m>(model: &'m Model, host: &Host) -> Vec<&'m crate::model::Service> {
    host.spec
        .services
        .iter()
        .filter_map(|n| model.service(n))
        .filter(|s| s.spec.status == Status::Active && s.spec.kind == ServiceKind::McpStdio)
        .collect()
}

/// The desktop client's config with this workspace's MCP servers merged in.
pub fn mcp_file(
    model: &Model,
    host: &Host,
    values: &BTreeMap<(String, String), String>,
    d: &mut Desired,
) -> Result<()> {
    let services = mcp_services(model, host);
    if services.is_empty() {
        return Ok(());
    }
    let venv_python = model.root.join(".venv/bin/python");
    if !venv_python.exists() {
        bail!("{} does not exist: run `cargo xtask onboard` (or `cargo xtask libs`) first, the MCP servers run with it", venv_python.display());
    }
    let mut entries = BTreeMap::new();
    for s in services {
        let src = s
            .spec
            .source
            .as_ref()
            .context("validated: mcp servers have a source")?;
        let dir = sources::dir_of(model, &s.name, src)?;
        if !dir.is_dir() {
            bail!(
                "the source of `{}` is not at {}: run `cargo xtask sources`",
                s.name,
                dir.display()
            );
        }
        let mut entry = render::mcp_client::entry(model, &s.name, &venv_python, &dir)?;
        // Secret-using variables get their values here, from the service's .env.
        let rendered = envfile::parse(&envfile::render_env(s, values)?);
        for k in render::mcp_client::secret_env_names(s) {
            if let Some(v) = rendered.get(&k).filter(|v| !v.is_empty()) {
                entry["env"][k.as_str()] = serde_json::Value::String(v.clone());
            }
        }
        for v in s.spec.run.iter().flat_map(|r| &r.volumes) {
            std::fs::create_dir_all(render::mcp_client::volume_dir(model, &s.name, &v.name))?;
        }
        entries.insert(s.name.clone(), entry);
    }
    let path = render::mcp_client::config_path()?;
    let existing = read(&path)?;
    let merged = render::mcp_client::merge(existing.as_deref(), &entries)?;
    d.files.push(DesiredFile {
        path: path.to_string_lossy().into_owned(),
        content: merged.into_bytes(),
        mode: 0o600,
        what: MCP_CONFIG.into(),
    });
    Ok(())
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Keeps the previous client config beside it before `up` rewrites it.
pub fn backup(path: &str) -> Result<()> {
    let p = Path::new(path);
    if p.exists() {
        std::fs::copy(p, format!("{path}.xtask-backup"))
            .with_context(|| format!("back up {path}"))?;
    }
    Ok(())
}

/// `down local`: exactly this workspace's entries go.
pub fn mcp_remove(model: &Model, host: &Host) -> Result<Option<String>> {
    let names: Vec<String> = mcp_services(model, host)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let path = render::mcp_client::config_path()?;
    let Some(existing) = read(&path)? else {
        return Ok(None);
    };
    let text = render::mcp_client::remove(&existing, &names)?;
    if text != existing {
        let p = path.to_string_lossy().into_owned();
        backup(&p)?;
        envfile::write_private_atomic(&path, &text)?;
        return Ok(Some(format!("removed {} from {}", names.join(", "), p)));
    }
    Ok(None)
}

/// Workflow files of a github-actions host, into each component's checkout.
pub fn workflow_files(model: &Model, host: &Host, d: &mut Desired) -> Result<Vec<String>> {
    let mut secret_commands = Vec::new();
    for name in &host.spec.services {
        let Some(s) = model.service(name) else {
            continue;
        };
        if s.spec.status != Status::Active || s.spec.kind != ServiceKind::Workflow {
            continue;
        }
        let src = s
            .spec
            .source
            .as_ref()
            .with_context(|| format!("`{name}` has no [source] to write its workflows into"))?;
        let dir = sources::dir_of(model, name, src)?;
        if !dir.is_dir() {
            bail!(
                "the checkout of `{name}` is not at {}: run `cargo xtask sources {name}`",
                dir.display()
            );
        }
        for (rel, yaml) in render::workflows::files(model, name)? {
            d.files.push(DesiredFile {
                path: dir.join(&rel).to_string_lossy().into_owned(),
                content: yaml.into_bytes(),
                mode: 0o644,
                what: format!("{WORKFLOW} of {name}"),
            });
        }
        secret_commands.extend(render::workflows::secret_commands(model, name)?);
    }
    Ok(secret_commands)
}

/// A line diff (longest common subsequence), for showing what a workflow change does.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // On a tie the removed line comes first, as in `diff -u`.
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_diff() {
        assert_eq!(super::diff("a\nb\nc\n", "a\nx\nc\n"), "-b\n+x\n");
        assert_eq!(super::diff("", "a\n"), "+a\n");
    }
}
