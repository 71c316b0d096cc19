//! Component sources fetched into a cache that git ignores.

use std::path::{Path, PathBuf};

/// Where a git-sourced component is checked out.
pub fn checkout_dir(root: &Path, name: &str) -> PathBuf {
    root.join(".xtask/sources").join(name)
}
