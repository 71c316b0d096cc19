//! Builds without the package index: where build containers cannot reach it (or when asked
//! with `XTASK_WHEELHOUSE=1`), the Python requirements are made into wheels on the host, with
//! the host's own pip and its configuration (mirror, certificates), and the build installs
//! from them alone.
//!
//! The wheels go into the build context under `.xtask-wheels/`; after every `FROM` of the
//! vendored Dockerfile the build copies them to `/tmp/xtask-wheels` and sets `PIP_NO_INDEX`
//! and `PIP_FIND_LINKS` (and uv's equivalents) as build arguments, which RUN steps see as
//! environment and the final image does not keep. Such a build runs with `--network none`, so
//! it proves that nothing is fetched during it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::proc;

/// The environment variable that forces (`1`) or forbids (`0`) wheelhouse builds.
pub const ENV: &str = "XTASK_WHEELHOUSE";

/// Where the wheels sit inside the build context.
pub const CONTEXT_DIR: &str = ".xtask-wheels";

/// `Some(true)` / `Some(false)` when the environment decides; `None` to find out.
pub fn forced() -> Result<Option<bool>> {
    parse(std::env::var(ENV).ok().as_deref())
}

fn parse(value: Option<&str>) -> Result<Option<bool>> {
    match value {
        None | Some("") => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(other) => {
            bail!("{ENV}={other:?}: expected 1 (always build from a wheelhouse) or 0 (never)")
        }
    }
}

/// The environment variable naming the Docker network builds run on (`docker build
/// --network`), for machines where only some network reaches out (`host`, say).
pub const NETWORK_ENV: &str = "XTASK_BUILD_NETWORK";

/// The network builds run on, when set.
pub fn build_network() -> Result<Option<String>> {
    match std::env::var(NETWORK_ENV) {
        Err(_) => Ok(None),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => {
            let ok = !v.starts_with('-')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                bail!("{NETWORK_ENV}={v:?}: expected a Docker network name (letters, digits, `_`, `.`, `-`)");
            }
            Ok(Some(v))
        }
    }
}

/// Whether a container of `base`, on the network builds use, reaches the package index its
/// pip is configured with: one small download, bounded in time. A base without pip cannot
/// tell, and counts as reaching it (its build then fails or not on its own terms).
pub fn index_reachable(base: &str, network: Option<&str>) -> bool {
    let mut cmd = proc::cmd(
        "docker",
        [
            "run",
            "--rm",
            "--label",
            "xtask.project=xtask",
            "--network",
            network.unwrap_or("default"),
            base,
            "python3",
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--timeout",
            "10",
            "--retries",
            "0",
            "--dest",
            "/tmp/xtask-probe",
            "pip",
        ],
    );
    match proc::output_within(&mut cmd, Duration::from_secs(60)) {
        Ok(out) if out.status.success() => true,
        // 125-127: docker could not run it, or there is no python3 or pip to ask.
        Ok(out) => {
            let code = out.status.code().unwrap_or(0);
            let no_pip = String::from_utf8_lossy(&out.stderr).contains("No module named pip");
            (125..=127).contains(&code) || no_pip
        }
        Err(_) => false,
    }
}

/// Makes the wheels of the requirements files at the top of `ctx_dir` (`requirements*.txt`)
/// into `.xtask/wheelhouse/SERVICE`, plus the common build backends when the context is a
/// Python project itself; returns the files to add to the context.
///
/// A wheelhouse is kept per content of the requirements files: a build whose requirements did
/// not change reuses it without running pip (so a no-op build stays fast).
pub fn make(
    root: &Path,
    service: &str,
    ctx_dir: &Path,
    say: &dyn Fn(&str),
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut requirements: Vec<PathBuf> = std::fs::read_dir(ctx_dir)
        .with_context(|| format!("read {}", ctx_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("requirements") && n.ends_with(".txt"))
        })
        .collect();
    requirements.sort();
    let project = ["pyproject.toml", "setup.py"]
        .iter()
        .any(|f| ctx_dir.join(f).is_file());
    let mut h = Sha256::new();
    for r in &requirements {
        h.update(r.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(b"\0");
        h.update(std::fs::read(r).with_context(|| format!("read {}", r.display()))?);
        h.update(b"\0");
    }
    h.update([u8::from(project)]);
    let key = super::base::hex(&h.finalize());
    let dir = root
        .join(".xtask/wheelhouse")
        .join(service)
        .join(&key[..16]);
    if !dir.join(DONE).is_file() {
        say(&format!("{service}: making its wheelhouse"));
        fill(&dir, service, ctx_dir, &requirements, project)?;
    }
    let mut files = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file() && e.file_name() != DONE)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let data = std::fs::read(dir.join(&name))?;
        files.push((format!("{CONTEXT_DIR}/{name}"), data));
    }
    if files.is_empty() {
        // An empty folder still has to exist for the COPY.
        files.push((format!("{CONTEXT_DIR}/.keep"), Vec::new()));
    }
    Ok(files)
}

/// Marks a complete wheelhouse: one cut short by a failure or a kill is made again.
const DONE: &str = ".xtask-complete";

fn fill(
    dir: &Path,
    service: &str,
    ctx_dir: &Path,
    requirements: &[PathBuf],
    project: bool,
) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let python = host_python()?;
    if !requirements.is_empty() {
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pip", "wheel", "--quiet", "--wheel-dir"])
            .arg(dir)
            .current_dir(ctx_dir);
        for r in requirements {
            cmd.arg("-r").arg(r);
        }
        run(&mut cmd, service, "make wheels of its requirements")?;
    }
    if project {
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pip", "download", "--quiet", "--dest"])
            .arg(dir)
            .args(["setuptools", "wheel", "hatchling", "flit_core"]);
        run(&mut cmd, service, "download the build backends")?;
    }
    std::fs::write(dir.join(DONE), b"")?;
    Ok(())
}

fn host_python() -> Result<String> {
    for p in ["python3", "python"] {
        if Command::new(p)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(p.to_string());
        }
    }
    bail!("a wheelhouse build needs python3 with pip on this machine (apt-get install python3-pip)")
}

fn run(cmd: &mut Command, service: &str, what: &str) -> Result<()> {
    let out = proc::output(cmd, None)?;
    if !out.status.success() {
        bail!(
            "`{service}`: could not {what} on this machine for a wheelhouse build:\n{}",
            proc::tail(&String::from_utf8_lossy(&out.stderr), 10)
        );
    }
    Ok(())
}

/// The Dockerfile with the wheelhouse set up after every `FROM`.
pub fn dockerfile(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let first = line.split_whitespace().next().unwrap_or("");
        if first.eq_ignore_ascii_case("FROM") && !line.trim_end().ends_with('\\') {
            out.push_str(&format!(
                "COPY {CONTEXT_DIR}/ /tmp/xtask-wheels/\n\
                 ARG PIP_NO_INDEX=1\n\
                 ARG PIP_FIND_LINKS=/tmp/xtask-wheels\n\
                 ARG UV_NO_INDEX=1\n\
                 ARG UV_FIND_LINKS=/tmp/xtask-wheels\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_gets_the_wheelhouse_and_nothing_else_changes() {
        let text = "ARG BASE_IMAGE=x\nFROM ${BASE_IMAGE} AS build\nRUN pip install -r r.txt\nfrom build\nCMD [\"x\"]\n";
        let out = dockerfile(text);
        assert_eq!(out.matches("ARG PIP_NO_INDEX=1").count(), 2, "{out}");
        assert!(out.starts_with("ARG BASE_IMAGE=x\nFROM ${BASE_IMAGE} AS build\nCOPY .xtask-wheels/ /tmp/xtask-wheels/\n"), "{out}");
        let kept: Vec<&str> = out
            .lines()
            .filter(|l| {
                !l.starts_with("COPY .xtask-wheels")
                    && !l.starts_with("ARG PIP_")
                    && !l.starts_with("ARG UV_")
            })
            .collect();
        assert_eq!(kept.join("\n") + "\n", text);
    }

    #[test]
    fn the_environment_setting_is_strict() {
        // Only the parser: the variable itself is left alone (tests run in parallel).
        assert!(matches!(parse(Some("1")), Ok(Some(true))));
        assert!(matches!(parse(Some("0")), Ok(Some(false))));
        assert!(matches!(parse(None), Ok(None)));
        assert!(parse(Some("yes")).is_err());
    }
}
