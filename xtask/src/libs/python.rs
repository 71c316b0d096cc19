//! The Python side of `libs`: finding an interpreter new enough, the workspace's venv (made
//! anew when it is broken or was made by another interpreter), uv, and the environment uv needs
//! to verify TLS behind an intercepting proxy.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::proc;
use crate::ui::Progress;

use super::Installer;

pub const MIN_PYTHON: (u32, u32) = (3, 11);

/// Interpreters tried in order when `python3` is missing or too old.
const CANDIDATES: [&str; 5] = [
    "python3",
    "python3.14",
    "python3.13",
    "python3.12",
    "python3.11",
];

/// Prints what `libs` needs to know about an interpreter, as one JSON object. Run with `-I` so
/// that no PYTHON* variable or the current directory changes the answer.
const PROBE: &str = r#"
import importlib.util, json, os, sys, sysconfig
try:
    import ssl
    p = ssl.get_default_verify_paths()
    cafile = p.cafile or p.openssl_cafile
except Exception:
    cafile = None
print(json.dumps({
    "version": list(sys.version_info[:3]),
    "executable": sys.executable,
    "base_prefix": os.path.realpath(sys.base_prefix),
    "purelib": sysconfig.get_paths()["purelib"],
    "pip": importlib.util.find_spec("pip") is not None,
    "cafile": cafile,
}))
"#;

/// What an interpreter says about itself.
#[derive(Debug, Clone, Deserialize)]
pub struct PyInfo {
    pub version: (u32, u32, u32),
    /// The real interpreter (not a pyenv shim or a wrapper script).
    pub executable: PathBuf,
    /// The installation a venv was made from (its own prefix for a base interpreter).
    pub base_prefix: PathBuf,
    /// site-packages.
    pub purelib: PathBuf,
    /// Whether pip is importable.
    pub pip: bool,
    /// The CA bundle Python's ssl module uses by default.
    pub cafile: Option<PathBuf>,
}

impl PyInfo {
    pub fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }
}

/// Runs the probe with `python`.
pub fn probe(python: &Path) -> Result<PyInfo> {
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-c", PROBE]);
    let out = proc::run(&mut cmd, None)?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "unexpected answer from {}: {}",
            python.display(),
            proc::tail(&String::from_utf8_lossy(&out.stdout), 3)
        )
    })
}

/// The first of `python3`, `python3.14` ... `python3.11` on PATH that is at least 3.11 (every
/// match on PATH is tried: a pyenv shim for a version that is not selected does not run).
pub fn find_python() -> Result<PyInfo> {
    let mut seen: Vec<String> = Vec::new();
    for name in CANDIDATES {
        for path in which_all(name) {
            match probe(&path) {
                Ok(info) if (info.version.0, info.version.1) >= MIN_PYTHON => return Ok(info),
                Ok(info) => {
                    let line = format!(
                        "{name} is Python {} ({})",
                        info.version_string(),
                        info.executable.display()
                    );
                    if !seen.contains(&line) {
                        seen.push(line);
                    }
                }
                Err(e) if name == "python3" && seen.is_empty() => seen.push(format!(
                    "{name} ({}) does not run: {}",
                    path.display(),
                    proc::tail(&format!("{e:#}"), 1)
                )),
                Err(_) => {}
            }
        }
    }
    let found = if seen.is_empty() {
        "there is no python3 on PATH".to_string()
    } else {
        seen.join("; ")
    };
    bail!(
        "the libraries need Python >= {}.{}, and {found}: install Python 3.11 or newer \
         (e.g. `apt-get install python3.11`, `pyenv install 3.12`) and put it first on PATH",
        MIN_PYTHON.0,
        MIN_PYTHON.1
    )
}

/// Every executable file named `name` on PATH, in PATH order.
fn which_all(name: &str) -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .filter(|p| is_executable(p))
        .collect()
}

/// An executable file named `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `--install-uv` puts uv: a venv of its own, and a link to its uv that later runs find.
pub fn uv_tools_venv(root: &Path) -> PathBuf {
    root.join(".xtask/tools/uv")
}

pub fn uv_link(root: &Path) -> PathBuf {
    root.join(".xtask/bin/uv")
}

/// uv on PATH, in the workspace's venv, or where `--install-uv` put it.
pub fn find_uv(root: &Path) -> Option<PathBuf> {
    which("uv")
        .or_else(|| Some(root.join(".venv/bin/uv")).filter(|p| is_executable(p)))
        .or_else(|| Some(uv_link(root)).filter(|p| is_executable(p)))
}

/// Installs uv with pip into a venv under `.xtask/tools/` and links it from `.xtask/bin/uv`,
/// where `find_uv` looks. Does nothing when uv is already found.
pub fn install_uv(root: &Path, base: &PyInfo, progress: &Progress) -> Result<PathBuf> {
    if let Some(uv) = find_uv(root) {
        progress.line(&format!("uv: already available at {}", uv.display()));
        return Ok(uv);
    }
    let task = progress.task("uv", "installing with pip into .xtask/tools/uv");
    let result = (|| -> Result<PathBuf> {
        let tools = uv_tools_venv(root);
        let tools_py = tools.join("bin/python");
        if !probe(&tools_py).is_ok_and(|i| i.pip) {
            if tools.exists() {
                fs::remove_dir_all(&tools)
                    .with_context(|| format!("remove {}", tools.display()))?;
            }
            let mut venv = Command::new(&base.executable);
            venv.args(["-m", "venv"]).arg(&tools);
            proc::run(&mut venv, None)?;
        }
        let mut pip = Command::new(&tools_py);
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--upgrade",
            "uv",
        ]);
        proc::run(&mut pip, None)?;
        let target = tools.join("bin/uv");
        if !is_executable(&target) {
            bail!("pip installed uv but {} is missing", target.display());
        }
        let link = uv_link(root);
        fs::create_dir_all(link.parent().expect("has a parent"))?;
        let _ = fs::remove_file(&link);
        // Relative, so the workspace can move.
        std::os::unix::fs::symlink("../tools/uv/bin/uv", &link)
            .with_context(|| format!("link {}", link.display()))?;
        Ok(link)
    })();
    match result {
        Ok(link) => {
            let version = proc::stdout(Command::new(&link).arg("--version"))
                .unwrap_or_else(|e| format!("(does not run: {e:#})"));
            task.finish(&format!("installed {version} at {}", link.display()));
            Ok(link)
        }
        Err(e) => {
            task.finish("FAILED");
            Err(e.context("installing uv"))
        }
    }
}

/// Environment for uv commands: uv verifies TLS with its bundled roots unless told otherwise,
/// which fails behind an intercepting proxy whose CA only the system store has. When the caller
/// has not chosen, point uv at the CA bundle the interpreter's ssl module uses (the system
/// one), or failing that at the platform's certificate store.
pub fn uv_env(base: &PyInfo) -> Vec<(&'static str, OsString)> {
    let mut env = vec![("UV_PYTHON_DOWNLOADS", OsString::from("never"))];
    let chosen = ["SSL_CERT_FILE", "UV_NATIVE_TLS", "UV_SYSTEM_CERTS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if chosen {
        return env;
    }
    match base.cafile.as_ref().filter(|f| f.is_file()) {
        Some(file) => env.push(("SSL_CERT_FILE", file.clone().into_os_string())),
        None => {
            // Newer uv reads the first, older uv the second.
            env.push(("UV_SYSTEM_CERTS", OsString::from("1")));
            env.push(("UV_NATIVE_TLS", OsString::from("1")));
        }
    }
    env
}

/// The workspace's venv, known to run and to have been made from `base`.
pub struct Venv {
    pub dir: PathBuf,
    pub python: PathBuf,
    pub info: PyInfo,
}

/// Makes sure `<root>/.venv` exists, runs and was made by `base`; makes it (anew) otherwise.
/// `existing` is the probe of the venv's python if the caller already ran it.
pub fn ensure_venv(
    root: &Path,
    base: &PyInfo,
    existing: Option<Result<PyInfo>>,
    installer: Installer,
    uv: Option<&Path>,
    progress: &Progress,
) -> Result<Venv> {
    let dir = root.join(".venv");
    let python = dir.join("bin/python");
    let why = if dir.exists() {
        match existing.unwrap_or_else(|| probe(&python)) {
            Ok(info) if info.version == base.version && info.base_prefix == base.base_prefix => {
                return Ok(Venv { dir, python, info })
            }
            Ok(info) => format!(
                "it was made by Python {} ({}), not {} ({})",
                info.version_string(),
                info.base_prefix.display(),
                base.version_string(),
                base.base_prefix.display()
            ),
            Err(e) => format!("it is broken: {}", proc::tail(&format!("{e:#}"), 1)),
        }
    } else {
        String::new()
    };
    if dir.exists() {
        let looks_like_venv = dir.join("pyvenv.cfg").exists()
            || dir.join("bin").exists()
            || fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        if !looks_like_venv {
            bail!(
                "{} exists but is not a virtual environment; move it away",
                dir.display()
            );
        }
        progress.line(&format!("venv: recreating {}: {why}", dir.display()));
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    let mut cmd = match (installer, uv) {
        (Installer::Uv, Some(uv)) => {
            let mut c = Command::new(uv);
            c.args(["venv", "--quiet", "--python"])
                .arg(&base.executable)
                .arg(&dir)
                .envs(uv_env(base));
            c
        }
        _ => {
            let mut c = Command::new(&base.executable);
            c.args(["-m", "venv"]).arg(&dir);
            c
        }
    };
    let task = progress.task(
        "venv",
        &format!("creating with Python {}", base.version_string()),
    );
    if let Err(e) = proc::run(&mut cmd, None) {
        task.finish("FAILED");
        return Err(e.context(format!("creating {}", dir.display())));
    }
    let info = probe(&python).with_context(|| format!("the new venv {}", dir.display()))?;
    task.finish(&format!(
        "created {} (Python {}, {})",
        dir.display(),
        info.version_string(),
        match (installer, uv) {
            (Installer::Uv, Some(_)) => "uv venv",
            _ => "python -m venv",
        }
    ));
    Ok(Venv { dir, python, info })
}

/// Adds pip to a venv made without it (by `uv venv`) when pip is to install into it.
pub fn ensure_pip(venv: &mut Venv, progress: &Progress) -> Result<()> {
    if venv.info.pip {
        return Ok(());
    }
    progress.line("venv: adding pip (ensurepip)");
    proc::run(
        Command::new(&venv.python).args(["-m", "ensurepip", "--default-pip"]),
        None,
    )?;
    venv.info.pip = true;
    Ok(())
}
