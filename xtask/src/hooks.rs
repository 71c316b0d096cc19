//! The git pre-commit hook: `check` must pass, and no commit may add an `.env` file or any
//! current secret value.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use git2::Repository;

use crate::{envfile, model};

const MARKER: &str = "# installed by cargo xtask onboard";

/// Single-quotes a string for sh: the hook embeds paths, which may contain anything.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Installs (or refreshes) the pre-commit hook of the repository holding `root`. A hook the
/// user wrote themselves is left alone and reported.
pub fn install(root: &Path) -> Result<String> {
    let repo = Repository::discover(root).context("the workspace is not in a git repository")?;
    let hooks = repo.path().join("hooks");
    fs::create_dir_all(&hooks)?;
    let hook = hooks.join("pre-commit");
    let exe = std::env::current_exe().context("find the xtask binary")?;
    let root = root.canonicalize()?;
    let text = format!(
        "#!/bin/sh\n{MARKER}\n# Refuses commits that fail `cargo xtask check`, add an .env file or contain a secret value.\nexec {} --workspace {} pre-commit\n",
        sh_quote(&exe.to_string_lossy()),
        sh_quote(&root.to_string_lossy())
    );
    if let Ok(current) = fs::read_to_string(&hook) {
        if current == text {
            return Ok("pre-commit hook unchanged".into());
        }
        if !current.contains(MARKER) {
            return Ok(format!("{} exists and is not ours: left alone (run `cargo xtask pre-commit` from it to get the checks)", hook.display()));
        }
    }
    let tmp = hook.with_extension("tmp");
    fs::write(&tmp, &text)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &hook)?;
    Ok(format!("pre-commit hook installed at {}", hook.display()))
}

/// Paths in a commit-to-be that must not go in: `.env` files and files holding a secret value.
/// `staged` looks at the index against HEAD; otherwise at every tracked file.
pub fn leaks(root: &Path, secrets: &[String], staged: bool) -> Result<Vec<String>> {
    let Ok(repo) = Repository::discover(root) else {
        return Ok(Vec::new());
    };
    let index = repo.index()?;
    let mut found = Vec::new();
    let mut inspect = |path: &str, blob: git2::Oid| -> Result<()> {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == ".env" || name.ends_with(".env") {
            found.push(format!("{path}: an .env file"));
            return Ok(());
        }
        if secrets.is_empty() {
            return Ok(());
        }
        let blob = repo.find_blob(blob)?;
        let content = blob.content();
        if secrets.iter().any(|s| contains(content, s.as_bytes())) {
            found.push(format!("{path}: contains a secret value"));
        }
        Ok(())
    };
    if staged {
        let head = repo.head().ok().and_then(|h| h.peel_to_tree().ok());
        let diff = repo.diff_tree_to_index(head.as_ref(), Some(&index), None)?;
        for delta in diff.deltas() {
            if delta.status() == git2::Delta::Deleted {
                continue;
            }
            let f = delta.new_file();
            if let Some(p) = f.path() {
                inspect(&p.to_string_lossy(), f.id())?;
            }
        }
    } else {
        for entry in index.iter() {
            inspect(&String::from_utf8_lossy(&entry.path), entry.id)?;
        }
    }
    Ok(found)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `cargo xtask pre-commit`: what the hook runs.
pub fn run_pre_commit(root: &Path) -> Result<ExitCode> {
    let model = match model::load(root) {
        Ok(m) => m,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("commit refused: `cargo xtask check` fails");
            return Ok(ExitCode::FAILURE);
        }
    };
    let secrets = envfile::all_values(&model);
    let leaks = leaks(root, &secrets, true)?;
    if leaks.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("commit refused:");
    for l in leaks {
        eprintln!("  {l}");
    }
    eprintln!(
        "unstage them with `git restore --staged PATH`; secrets belong in the ignored .env files"
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(super::sh_quote("a b'c"), "'a b'\\''c'");
    }
}
