//! `.venv/xtask-state.json`: what was installed into the venv, per library, as a hash of
//! everything that defines the install. It lives inside the venv, so a venv made anew starts
//! with no state and everything is installed again.
//!
//! A library's entry is removed (and the file written) before its install starts and added
//! back only after the install succeeded; every write goes to a temporary file renamed over
//! the old one. An interrupted run therefore leaves either the old complete file or the new
//! one, never a half-written one, and never an entry for an install that did not finish.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Installer;

pub const FILE: &str = "xtask-state.json";
const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub libs: BTreeMap<String, LibState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LibState {
    /// sha256 over what defines the install (see `super::fingerprint`).
    pub hash: String,
    /// `editable` (pip/uv `-e`) or `path-entry` (a .pth file for a tree without packaging).
    pub mode: String,
    /// Absent when nothing had to be installed with an installer.
    pub installer: Option<Installer>,
    /// The library's source directory, for people reading the file.
    pub source: PathBuf,
    /// The commands that made the install.
    pub commands: Vec<String>,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
}

/// What `load` found.
pub enum Loaded {
    Fresh(State),
    /// The file existed but could not be used; every library is installed again.
    Unusable(State, String),
}

pub fn path(venv: &Path) -> PathBuf {
    venv.join(FILE)
}

pub fn load(venv: &Path) -> Loaded {
    let p = path(venv);
    let text = match fs::read(&p) {
        Ok(t) => t,
        Err(_) => return Loaded::Fresh(State::new()),
    };
    match serde_json::from_slice::<State>(&text) {
        Ok(s) if s.version == VERSION => Loaded::Fresh(s),
        Ok(s) => Loaded::Unusable(
            State::new(),
            format!("{} has format {}, not {VERSION}", p.display(), s.version),
        ),
        Err(e) => Loaded::Unusable(State::new(), format!("{} is unreadable: {e}", p.display())),
    }
}

impl State {
    pub fn new() -> State {
        State {
            version: VERSION,
            libs: BTreeMap::new(),
        }
    }

    /// Writes the state atomically: a temporary file in the same directory, synced, then
    /// renamed over the old one.
    pub fn save(&self, venv: &Path) -> Result<()> {
        let p = path(venv);
        let tmp = venv.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        write_atomic(&tmp, &p, &text)
    }
}

/// Writes `data` to `tmp`, syncs it and renames it to `dest`.
pub fn write_atomic(tmp: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result.with_context(|| format!("write {}", dest.display()))
}
