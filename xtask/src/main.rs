//! `cargo xtask`: the one tool that turns the workspace's descriptors into running systems.

mod check;
mod deploy;
mod docker;
mod doctor;
mod envfile;
mod git;
mod hooks;
mod http;
mod images;
mod libs;
mod model;
mod onboard;
mod proc;
mod redact;
mod render;
mod secrets;
mod signals;
mod smoke;
mod sources;
mod status;
mod target;
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
    /// Fetch component sources at their pinned revisions and show their state
    Sources(sources::Args),
    /// The venv at .venv with every library installed editable, and their import checks
    Libs(libs::Args),
    /// New contributor: doctor, sources, venv with editable libs, .env secrets, git hooks
    Onboard(onboard::Args),
    /// What `up HOST` would change (exit 0: nothing, 2: changes, 1: error)
    Plan(deploy::PlanArgs),
    /// Converge HOST to its descriptors: files, images, health-gated containers
    Up(deploy::UpArgs),
    /// Remove what `up` made on HOST (volumes only with --volumes)
    Down(deploy::DownArgs),
    /// A service's log on HOST
    Logs(deploy::LogsArgs),
    /// What the git pre-commit hook runs
    #[command(hide = true)]
    PreCommit,
    /// Run commands, write and read files on a host through its target (debugging, tests)
    #[command(hide = true)]
    TargetExec(target::debug::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.workspace.unwrap_or_else(default_root);
    // Absolute from here on: paths derived from the root end up on hosts, in env files and in
    // client configs, where a relative path would mean something else.
    let root = std::path::absolute(&root).unwrap_or(root);
    let result = match cli.command {
        Command::Check => check::run(&root),
        Command::Status(args) => status::run(&root, &args),
        Command::Doctor => doctor::run(),
        Command::Build(args) => images::run(&root, &args),
        Command::Smoke(args) => smoke::run(&root, &args),
        Command::Sources(args) => sources::run(&root, &args),
        Command::Libs(args) => libs::run(&root, &args),
        Command::Onboard(args) => onboard::run(&root, &args),
        Command::Plan(args) => deploy::plan(&root, &args),
        Command::Up(args) => deploy::up(&root, &args),
        Command::Down(args) => deploy::down(&root, &args),
        Command::Logs(args) => deploy::logs(&root, &args),
        Command::PreCommit => hooks::run_pre_commit(&root),
        Command::TargetExec(args) => target::debug::run(&root, &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", redact::text(&format!("error: {e:#}")));
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
