//! `cargo xtask libs` against temp copies of the fixture ecosystem: the venv, editable installs
//! (greet-lib with a pyproject, plain-lib without packaging), idempotence, import checks; each
//! with pip and with uv (installed once per test run by `libs --install-uv`). Needs python3 >=
//! 3.11 and access to PyPI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use tests::{copy_tree, fixtures, text, xtask_bin, TempDir};

#[derive(Clone, Copy, PartialEq)]
enum Installer {
    Pip,
    Uv,
}

impl Installer {
    fn name(self) -> &'static str {
        match self {
            Installer::Pip => "pip",
            Installer::Uv => "uv",
        }
    }
}

/// A temp copy of the fixture ecosystem (never the fixture itself).
fn workspace() -> (TempDir, PathBuf) {
    let dir = TempDir::new("libs");
    let ws = dir.path().join("eco");
    copy_tree(&fixtures().join("eco"), &ws);
    (dir, ws)
}

/// The directory holding a uv that `libs --install-uv` installed, once per test process, into
/// a tools workspace kept in cargo's target tmpdir (later runs find it there).
fn uv_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libs-uv-tools");
        std::fs::create_dir_all(&tools).unwrap();
        let out = Command::new(xtask_bin())
            .arg("--workspace")
            .arg(&tools)
            .args(["libs", "--install-uv"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "libs --install-uv failed:\n{}",
            text(&out.stderr)
        );
        let bin = tools.join(".xtask/bin");
        assert!(bin.join("uv").is_file(), "no uv at {}", bin.display());
        bin
    })
}

/// PATH without any directory that has a `uv`.
fn path_without_uv() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::env::split_paths(&path).filter(|d| !d.join("uv").exists())).unwrap()
}

/// `xtask libs ARGS` in `ws` with `installer` (uv: the test uv first on PATH).
fn libs_cmd(ws: &Path, installer: Installer, args: &[&str]) -> Output {
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--workspace")
        .arg(ws)
        .args(["libs", "--installer", installer.name()])
        .args(args);
    if installer == Installer::Uv {
        let mut path = vec![uv_bin_dir().to_path_buf()];
        path.extend(std::env::split_paths(&path_without_uv()));
        cmd.env("PATH", std::env::join_paths(path).unwrap());
    } else {
        cmd.env("PATH", path_without_uv());
    }
    cmd.output().unwrap()
}

/// Runs `libs --json` and returns its exit status and report.
fn libs_json(ws: &Path, installer: Installer, args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = libs_cmd(ws, installer, &all);
    let stderr = text(&out.stderr);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}\n{stderr}", text(&out.stdout)));
    (out.status.success(), json, stderr)
}

fn lib<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["libs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {json:#}"))
}

fn installs(json: &Value, name: &str) -> Vec<String> {
    lib(json, name)["installs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn assert_checks_pass(json: &Value, name: &str, expected: &[&str]) {
    let checks = lib(json, name)["checks"].as_array().unwrap();
    let imports: Vec<&str> = checks
        .iter()
        .map(|c| c["import"].as_str().unwrap())
        .collect();
    assert_eq!(imports, expected, "{json:#}");
    for c in checks {
        assert_eq!(c["ok"], true, "{name}: {c}");
    }
}

/// Runs python code in the workspace's venv (isolated: only the venv decides what imports).
fn venv_python(ws: &Path, code: &str) -> String {
    let out = Command::new(ws.join(".venv/bin/python"))
        .args(["-I", "-c", code])
        .output()
        .unwrap();
    assert!(out.status.success(), "{code}:\n{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// From nothing: venv, both libraries installed and importable; again: no installs; after a
/// pyproject change: exactly that library reinstalled.
fn install_noop_and_change(installer: Installer) {
    let (_dir, ws) = workspace();
    let ws = ws.canonicalize().unwrap();

    let (ok, first, stderr) = libs_json(&ws, installer, &[]);
    assert!(ok, "first run failed:\n{stderr}");
    assert_eq!(first["ok"], true);
    for name in ["greet-lib", "plain-lib"] {
        assert_eq!(lib(&first, name)["outcome"], "installed", "{first:#}");
        assert_eq!(
            lib(&first, name)["installer"],
            installer.name(),
            "{first:#}"
        );
    }
    let tool = match installer {
        Installer::Uv => "uv pip install --python",
        Installer::Pip => "-m pip install",
    };
    let greet = installs(&first, "greet-lib");
    assert_eq!(greet.len(), 1, "{greet:?}");
    assert!(greet[0].contains(tool), "{greet:?}");
    assert!(
        greet[0].contains(&format!("-e {}", ws.join("components/greet-lib").display())),
        "{greet:?}"
    );
    let plain = installs(&first, "plain-lib");
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(plain[0].contains(tool), "{plain:?}");
    assert!(
        plain[0].contains("-r ") && plain[0].ends_with("plain-lib/requirements.txt"),
        "{plain:?}"
    );
    assert!(!plain[0].contains("-e "), "no packaging, no -e: {plain:?}");
    assert_eq!(lib(&first, "greet-lib")["mode"], "editable");
    assert_eq!(lib(&first, "plain-lib")["mode"], "path-entry");
    assert_checks_pass(&first, "greet-lib", &["greet_lib:greet"]);
    assert_checks_pass(
        &first,
        "plain-lib",
        &["plain_tools", "plain_tools.textstats:TextStats"],
    );

    // plain-lib: a path entry to its src/, and six really installed in the venv.
    let pth = lib(&first, "plain-lib")["path_entry"]
        .as_str()
        .expect("a path entry")
        .to_string();
    assert!(pth.ends_with("/xtask-plain-lib.pth"), "{pth}");
    assert_eq!(
        std::fs::read_to_string(&pth).unwrap().trim(),
        ws.join("components/plain-lib/src").display().to_string()
    );
    let six = venv_python(&ws, "import six; print(six.__file__)");
    assert!(
        six.starts_with(&ws.join(".venv").display().to_string()),
        "{six}"
    );
    let words = venv_python(
        &ws,
        "from plain_tools.textstats import TextStats; print(TextStats().words(b'a b c'))",
    );
    assert_eq!(words, "3");
    // greet-lib: editable, so imported from the source tree.
    let greet_file = venv_python(&ws, "import greet_lib; print(greet_lib.__file__)");
    assert!(
        greet_file.starts_with(&ws.join("components/greet-lib/src").display().to_string()),
        "{greet_file}"
    );

    // Nothing changed: no install command at all, and it says so.
    let (ok, second, stderr) = libs_json(&ws, installer, &[]);
    assert!(ok, "second run failed:\n{stderr}");
    assert_eq!(second["installs"], 0, "{second:#}");
    for name in ["greet-lib", "plain-lib"] {
        assert_eq!(lib(&second, name)["outcome"], "unchanged", "{second:#}");
        assert!(installs(&second, name).is_empty(), "{second:#}");
    }
    let plain_text = libs_cmd(&ws, installer, &[]);
    assert!(plain_text.status.success());
    let summary = text(&plain_text.stdout);
    assert!(
        summary.contains("(0 installs: nothing changed)"),
        "{summary}"
    );
    assert!(
        text(&plain_text.stderr).contains("greet-lib: unchanged"),
        "{}",
        text(&plain_text.stderr)
    );

    // greet-lib's pyproject changes: exactly greet-lib is installed again.
    let pyproject = ws.join("components/greet-lib/pyproject.toml");
    let old = std::fs::read_to_string(&pyproject).unwrap();
    std::fs::write(
        &pyproject,
        old.replace("version = \"0.1.0\"", "version = \"0.1.1\""),
    )
    .unwrap();
    let (ok, third, stderr) = libs_json(&ws, installer, &[]);
    assert!(ok, "third run failed:\n{stderr}");
    assert_eq!(third["installs"], 1, "{third:#}");
    assert_eq!(lib(&third, "greet-lib")["outcome"], "installed");
    assert_eq!(installs(&third, "greet-lib").len(), 1);
    assert_eq!(lib(&third, "plain-lib")["outcome"], "unchanged");
    assert!(installs(&third, "plain-lib").is_empty());
    let version = venv_python(
        &ws,
        "import importlib.metadata as m; print(m.version('greet-lib'))",
    );
    assert_eq!(version, "0.1.1");
}

#[test]
fn pip_installs_from_nothing_then_nothing_then_only_the_changed_lib() {
    install_noop_and_change(Installer::Pip);
}

#[test]
fn uv_installs_from_nothing_then_nothing_then_only_the_changed_lib() {
    install_noop_and_change(Installer::Uv);
}

/// A failing import check makes the command fail, naming the check; the other checks are
/// still run and reported.
fn failing_check(installer: Installer) {
    let (_dir, ws) = workspace();
    let toml = ws.join("libs/plain-lib/lib.toml");
    let old = std::fs::read_to_string(&toml).unwrap();
    let new = old.replace(
        "import_checks = [",
        "import_checks = [\"no_such_module_for_test\", ",
    );
    assert_ne!(old, new);
    std::fs::write(&toml, new).unwrap();

    let (ok, json, stderr) = libs_json(&ws, installer, &[]);
    assert!(
        !ok,
        "a failing import check must fail the command:\n{stderr}"
    );
    assert_eq!(json["ok"], false);
    assert!(
        stderr.contains("no_such_module_for_test")
            && stderr.contains("ModuleNotFoundError: No module named 'no_such_module_for_test'"),
        "{stderr}"
    );
    let checks = lib(&json, "plain-lib")["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert_eq!(checks[0]["import"], "no_such_module_for_test");
    assert_eq!(checks[0]["ok"], false);
    assert!(checks[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("ModuleNotFoundError"));
    assert_eq!(checks[1]["ok"], true);
    assert_eq!(checks[2]["ok"], true);
    // The installs themselves went fine.
    assert_eq!(lib(&json, "plain-lib")["outcome"], "installed");
    assert_checks_pass(&json, "greet-lib", &["greet_lib:greet"]);
}

#[test]
fn pip_failing_import_check_fails_the_command_naming_it() {
    failing_check(Installer::Pip);
}

#[test]
fn uv_failing_import_check_fails_the_command_naming_it() {
    failing_check(Installer::Uv);
}

/// An install that did not finish (its state entry missing, as after an interrupted run) is
/// redone, alone; a broken venv is made anew and everything installed into it.
#[test]
fn unfinished_install_is_redone_and_broken_venv_recreated() {
    let (_dir, ws) = workspace();
    let (ok, _, stderr) = libs_json(&ws, Installer::Pip, &[]);
    assert!(ok, "{stderr}");

    let state_path = ws.join(".venv/xtask-state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert!(state["libs"]["plain-lib"]["hash"].is_string(), "{state:#}");
    state["libs"]
        .as_object_mut()
        .unwrap()
        .remove("greet-lib")
        .unwrap();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let (ok, json, stderr) = libs_json(&ws, Installer::Pip, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(lib(&json, "greet-lib")["outcome"], "installed");
    assert_eq!(lib(&json, "plain-lib")["outcome"], "unchanged");
    assert_eq!(json["installs"], 1);

    std::fs::remove_file(ws.join(".venv/bin/python")).unwrap();
    let (ok, json, stderr) = libs_json(&ws, Installer::Pip, &[]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("recreating"), "{stderr}");
    assert_eq!(lib(&json, "greet-lib")["outcome"], "installed");
    assert_eq!(lib(&json, "plain-lib")["outcome"], "installed");
    assert_checks_pass(
        &json,
        "plain-lib",
        &["plain_tools", "plain_tools.textstats:TextStats"],
    );
}

#[test]
fn forced_uv_that_is_missing_says_how_to_install_it() {
    let (_dir, ws) = workspace();
    let out = Command::new(xtask_bin())
        .arg("--workspace")
        .arg(&ws)
        .args(["libs", "--installer", "uv"])
        .env("PATH", path_without_uv())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("uv is not installed") && stderr.contains("cargo xtask libs --install-uv"),
        "{stderr}"
    );
    assert!(!ws.join(".venv").exists(), "no venv made before failing");
}

#[test]
fn unknown_library_is_an_error_naming_it() {
    let (_dir, ws) = workspace();
    let out = libs_cmd(&ws, Installer::Pip, &["no-such-lib"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown library `no-such-lib`") && stderr.contains("greet-lib"),
        "{stderr}"
    );
}
