//! `cargo xtask onboard`: from a fresh clone to a working setup. doctor, sources, the venv with
//! editable libraries, secrets in `.env` files, the pre-commit hook; a progress line per step
//! and a summary. Each step is idempotent, so a second run changes nothing and says so, and an
//! interrupted run is repaired by the next.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::ui::Progress;
use crate::{doctor, envfile, hooks, libs, model, sources};

#[derive(clap::Args)]
pub struct Args {
    /// Skip the tool check (for machines that only need the libraries)
    #[arg(long)]
    skip_doctor: bool,
    /// Install uv (with pip, into .xtask/) when it is not found: much faster installs
    #[arg(long)]
    install_uv: bool,
}

pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    let started = Instant::now();
    let progress = Progress::new();
    let mut summary: Vec<String> = Vec::new();

    progress.line("[1/5] doctor");
    if !args.skip_doctor {
        let findings = doctor::findings();
        let missing: Vec<_> = findings.iter().filter(|f| !f.ok && f.required).collect();
        if !missing.is_empty() {
            eprintln!("missing tools (all of them, install and run onboard again):");
            for f in missing {
                eprintln!("  {}: {}  ->  {}", f.name, f.detail, f.install);
            }
            return Ok(ExitCode::FAILURE);
        }
        summary.push(format!("doctor: {} tools present", findings.len()));
    } else {
        summary.push("doctor: skipped".into());
    }

    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    // Current secrets are known to the redactor before any command can echo them.
    envfile::all_values(&model);

    progress.line("[2/5] sources");
    let reports = sources::sync(&model, &[], &progress)?;
    let fetched = reports.iter().filter(|r| r.fetched).count();
    let dirty: Vec<&str> = reports
        .iter()
        .filter(|r| r.dirty)
        .map(|r| r.component.as_str())
        .collect();
    summary.push(format!(
        "sources: {} checked out, {fetched} fetched{}",
        reports.len(),
        if dirty.is_empty() {
            String::new()
        } else {
            format!(", dirty: {}", dirty.join(", "))
        }
    ));

    progress.line("[3/5] python libraries");
    let opts = libs::Options {
        install_uv: args.install_uv,
        ..libs::Options::default()
    };
    let libs = libs::sync_with(&model, &[], &opts, &progress)?;
    let installs: usize = libs.iter().map(|l| l.installs.len()).sum();
    // A failed install counts as much as a failed import check.
    let failed = libs::failures(&libs);
    summary.push(format!(
        "{} ({} in .venv)",
        libs::summary(&libs),
        libs.len()
    ));

    progress.line("[4/5] secrets");
    let secrets = envfile::ensure(&model)?;
    summary.push(format!(
        "secrets: {} generated, {} kept, {} .env files (mode 0600, ignored by git)",
        secrets.generated.len(),
        secrets.kept,
        secrets.files.len()
    ));
    for g in &secrets.generated {
        progress.line(&format!("  generated {g}"));
    }

    progress.line("[5/5] git hooks");
    match hooks::install(root) {
        Ok(msg) => summary.push(format!("hooks: {msg}")),
        Err(e) => summary.push(format!("hooks: not installed ({e:#})")),
    }

    println!(
        "\nonboard summary ({:.1}s):",
        started.elapsed().as_secs_f64()
    );
    for line in &summary {
        println!("  {line}");
    }
    if fetched == 0 && installs == 0 && secrets.generated.is_empty() {
        println!("  nothing to do: everything was already in place");
    }
    if !secrets.missing.is_empty() {
        println!("secrets to set by hand (required from the environment):");
        for m in &secrets.missing {
            println!("  {m}");
        }
    }
    if !failed.is_empty() {
        println!("failed: {}", failed.join("; "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
