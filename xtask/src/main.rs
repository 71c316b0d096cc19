//! `cargo xtask`: the one tool that turns the workspace's descriptors into running systems.

mod check;
mod docker;
mod doctor;
mod git;
mod http;
mod images;
mod model;
mod proc;
mod secrets;
mod signals;
mod smoke;
mod sources;
mod status;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Deploy and test the ecosystem described in services/, hosts/ and libs/"
)]
struct Cli {
    /// Workspace root holding services/, hosts/ and libs/ (default: this repository).
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate every descriptor; no side effects
    Check,
    /// The deployment matrix: every component, where and how it runs
    #[command(alias = "ls")]
    Status(status::Args),
    /// Check the tools the other commands need, all at once
    Doctor,
    /// Build container images, cached by content, tagged by git revision
    Build(images::Args),
    /// End-to-end checks in throwaway containers, always torn down
    Smoke(smoke::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.workspace.unwrap_or_else(default_root);
    let result = match cli.command {
        Command::Check => check::run(&root),
        Command::Status(args) => status::run(&root, &args),
        Command::Doctor => doctor::run(),
        Command::Build(args) => images::run(&root, &args),
        Command::Smoke(args) => smoke::run(&root, &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository this binary was built from: the parent of xtask/.
fn default_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
