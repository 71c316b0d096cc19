//! Reading repositories with git2: the revision and dirty state of a component's source.

use std::path::Path;

use git2::{Repository, StatusOptions};

/// The revision a source directory is at, for image tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// 12-digit commit id, or `nogit` when the directory is not in a repository.
    pub short: String,
    /// Uncommitted changes (including untracked files) under the directory.
    pub dirty: bool,
}

impl Revision {
    /// The image tag for this revision; a dirty tree also carries a content hash so two dirty
    /// builds never share a tag (as Kamal marks uncommitted builds).
    pub fn tag(&self, content_hash: &str) -> String {
        if self.dirty || self.short == "nogit" {
            format!("{}-dirty.{}", self.short, &content_hash[..8])
        } else {
            self.short.clone()
        }
    }
}

pub fn revision(dir: &Path) -> Revision {
    let nogit = Revision {
        short: "nogit".into(),
        dirty: true,
    };
    let Ok(repo) = Repository::discover(dir) else {
        return nogit;
    };
    let Some(head) = repo.head().ok().and_then(|h| h.peel_to_commit().ok()) else {
        return nogit;
    };
    let short = head.id().to_string()[..12].to_string();
    let dirty = match (repo.workdir(), dir.canonicalize()) {
        (Some(work), Ok(dir)) => {
            let work = work.canonicalize().unwrap_or_else(|_| work.to_path_buf());
            let rel = dir.strip_prefix(&work).unwrap_or(Path::new(""));
            let mut opts = StatusOptions::new();
            opts.include_untracked(true)
                .recurse_untracked_dirs(true)
                .include_ignored(false);
            if !rel.as_os_str().is_empty() {
                opts.pathspec(rel);
            }
            repo.statuses(Some(&mut opts))
                .map(|s| !s.is_empty())
                .unwrap_or(true)
        }
        _ => true,
    };
    Revision { short, dirty }
}
