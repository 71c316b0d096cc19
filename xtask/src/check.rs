//! `cargo xtask check`: load and validate the whole workspace, print a summary.

use std::path::Path;
use std::process::ExitCode;

use crate::model::{self, Status};

pub fn run(root: &Path) -> anyhow::Result<ExitCode> {
    if !root.is_dir() {
        anyhow::bail!("workspace {} is not a directory", root.display());
    }
    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    // Tracked files must hold no secret value and no real .env file.
    let secrets = crate::envfile::all_values(&model);
    let leaks = crate::hooks::leaks(root, &secrets, false)?;
    if !leaks.is_empty() {
        for l in &leaks {
            eprintln!("error: tracked by git: {l}");
        }
        eprintln!("error: remove them from git (`git rm --cached PATH`); secrets belong in the ignored .env files");
        return Ok(ExitCode::FAILURE);
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "ok: {}, {}, {} in {}",
        plural(model.services.len(), "service"),
        plural(model.hosts.len(), "host"),
        plural(model.libs.len(), "lib"),
        root.display()
    );
    let not_active: Vec<String> = model
        .services
        .iter()
        .map(|s| (&s.name, s.spec.status))
        .chain(model.libs.iter().map(|l| (&l.name, l.spec.status)))
        .chain(model.hosts.iter().map(|h| (&h.name, h.spec.status)))
        .filter(|(_, st)| *st != Status::Active)
        .map(|(n, st)| format!("{n} ({})", st.as_str()))
        .collect();
    if !not_active.is_empty() {
        println!("not active yet: {}", not_active.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
