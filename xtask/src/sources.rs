//! Component sources fetched into a cache that git ignores.
//! (Being written: fetch at the pinned revision with mirrors, report per component.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::model::{Model, Source};
use crate::ui::Progress;

#[derive(clap::Args)]
pub struct Args {
    /// Only these components (services or libs); default: all with a git source
    pub names: Vec<String>,
}

/// Where a git-sourced component is checked out.
pub fn checkout_dir(root: &Path, name: &str) -> PathBuf {
    root.join(".xtask/sources").join(name)
}

/// Where a component's code is on this machine: a path source in the workspace, or the
/// checkout of a git source (which must have been fetched).
pub fn dir_of(model: &Model, name: &str, source: &Source) -> Result<PathBuf> {
    match (&source.path, &source.git) {
        (Some(p), _) => Ok(model.root.join(p)),
        (None, Some(_)) => Ok(checkout_dir(&model.root, name)),
        (None, None) => bail!("`{name}` has an empty [source]"),
    }
}

/// What `sync` found or did for one component.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub component: String,
    /// The pinned revision from the descriptor.
    pub rev: String,
    /// The commit checked out (full id).
    pub commit: String,
    pub dirty: bool,
    /// Commits the checkout is ahead of / behind the pin.
    pub ahead: usize,
    pub behind: usize,
    /// Whether this run fetched anything.
    pub fetched: bool,
}

/// Fetches and checks out every git source (or those of `names`) at its pin.
pub fn sync(_model: &Model, _names: &[String], _progress: &Progress) -> Result<Vec<SourceReport>> {
    bail!("sources are not implemented yet")
}

pub fn run(_root: &Path, _args: &Args) -> Result<ExitCode> {
    bail!("sources are not implemented yet")
}
