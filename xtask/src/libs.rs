//! `cargo xtask libs`: one venv at `<workspace>/.venv` with every active library installed
//! editable, then each library's import checks run in it.
//!
//! A library with packaging (pyproject.toml, setup.py or setup.cfg) is installed with
//! `uv pip install --python .venv/bin/python -e DIR` when uv is available, else with the venv's
//! `python -m pip install -e DIR`; its requirements file and `packages` go on the same command.
//! A library without packaging is made editable the way an editable install works underneath: a
//! path entry `xtask-NAME.pth` in the venv's site-packages holding the absolute path of
//! `<source>/<import_root>`; its requirements file and `packages` are installed as above.
//!
//! Installs are skipped when nothing that defines them changed: see `state` for the file that
//! records them and `fingerprint` for what goes into the hash.

mod python;
mod state;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{self, Lib, Model, Status};
use crate::ui::Progress;
use crate::{proc, signals, sources};

use python::Venv;
use state::{LibState, State};

/// Files whose presence makes a source directory an installable Python project.
const PACKAGING: [&str; 3] = ["pyproject.toml", "setup.py", "setup.cfg"];

/// Runs import checks: each argument is `module` or `module:attr.attr`; the names travel as
/// argv and are never put into code. Imported modules may print: results go to the original
/// stdout behind a marker while `sys.stdout` points at stderr.
const CHECK_PY: &str = r#"
import importlib, json, sys, traceback
out = sys.stdout
sys.stdout = sys.stderr
for spec in sys.argv[1:]:
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        result = {"check": spec, "ok": True}
    except BaseException as e:
        line = traceback.format_exception_only(type(e), e)[-1].strip()
        result = {"check": spec, "ok": False, "error": line}
    out.write("XTASK-CHECK " + json.dumps(result) + "\n")
    out.flush()
"#;
const CHECK_MARK: &str = "XTASK-CHECK ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    Uv,
    Pip,
}

impl Installer {
    pub fn as_str(self) -> &'static str {
        match self {
            Installer::Uv => "uv",
            Installer::Pip => "pip",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Only these libraries; default: all active ones
    pub names: Vec<String>,
    /// Install with this instead of uv when available, else pip
    #[arg(long, value_enum, value_name = "uv|pip")]
    pub installer: Option<Installer>,
    /// First install uv (with pip, into .xtask/tools/uv; later runs find it), then use it
    #[arg(long)]
    pub install_uv: bool,
    /// Install again even when nothing changed
    #[arg(long)]
    pub force: bool,
    /// Print the reports as JSON on stdout (the summary goes to stderr)
    #[arg(long)]
    pub json: bool,
}

/// How `sync_with` works; `Default`: uv when available, else pip; only what changed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Forced installer; `None` = uv when available, else pip.
    pub installer: Option<Installer>,
    /// Install uv first when it is not found.
    pub install_uv: bool,
    /// Reinstall every selected library.
    pub force: bool,
}

/// What happened to a library's install in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    Unchanged,
    /// Why the install failed (its last lines).
    Failed(String),
}

/// What `sync` did for one library.
#[derive(Debug, Clone)]
pub struct LibReport {
    pub name: String,
    /// The install commands that ran (empty when nothing needed installing).
    pub installs: Vec<String>,
    /// `(import, Ok or the error)` per import check.
    pub checks: Vec<(String, std::result::Result<(), String>)>,
    pub outcome: Outcome,
    /// `editable` or `path-entry` (empty when the library could not be looked at).
    pub mode: &'static str,
    /// The installer that ran `installs`.
    pub installer: Option<Installer>,
    /// The .pth file written in this run (path-entry libraries).
    pub path_entry: Option<PathBuf>,
    /// Time spent installing.
    pub seconds: f64,
}

impl LibReport {
    /// Installed or unchanged, and every import check passed.
    pub fn ok(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed(_)) && self.checks.iter().all(|(_, r)| r.is_ok())
    }
}

/// Makes the venv and installs every active library (or those of `names`), uv when available,
/// else pip; then runs the import checks. Failures of one library are in its report; `Err` is
/// for what stops everything (no suitable Python, a venv that cannot be made).
pub fn sync_with(
    model: &Model,
    names: &[String],
    opts: &Options,
    progress: &Progress,
) -> Result<Vec<LibReport>> {
    let libs = select(model, names)?;
    let root = std::path::absolute(&model.root)
        .with_context(|| format!("workspace {}", model.root.display()))?;
    let _lock = lock(&root, progress)?;
    // The venv's interpreter is asked about itself while python3 is looked for (a pyenv shim
    // alone takes a tenth of a second): the two answers decide whether the venv is kept.
    let venv_python = root.join(".venv/bin/python");
    let (base, existing) = std::thread::scope(|s| {
        let existing = s.spawn(|| venv_python.exists().then(|| python::probe(&venv_python)));
        let base = python::find_python();
        (base, existing.join().expect("probe thread"))
    });
    let base = base?;

    if opts.install_uv {
        python::install_uv(&root, &base, progress)?;
    }
    let uv = python::find_uv(&root);
    let installer = match (opts.installer, &uv) {
        (Some(Installer::Uv), None) => bail!(
            "uv is not installed (looked on PATH, in .venv/bin and .xtask/bin): \
             `cargo xtask libs --install-uv` installs it"
        ),
        (Some(i), _) => i,
        (None, Some(_)) => Installer::Uv,
        (None, None) => {
            progress.line(
                "uv not found: installing with pip (slower); \
                 `--install-uv` (of `libs` or `onboard`) installs uv",
            );
            Installer::Pip
        }
    };
    let uv = uv.filter(|_| installer == Installer::Uv);
    let mut venv = python::ensure_venv(&root, &base, existing, installer, uv.as_deref(), progress)?;
    let mut state = match state::load(&venv.dir) {
        state::Loaded::Fresh(s) => s,
        state::Loaded::Unusable(s, why) => {
            progress.line(&format!("venv: {why}; installing everything again"));
            s
        }
    };
    prune(model, &venv, &mut state, progress)?;

    let ctx = Ctx {
        installer,
        uv,
        uv_env: python::uv_env(&base),
    };
    let mut reports = Vec::new();
    for lib in &libs {
        signals::check()?;
        reports.push(install(
            model, lib, &ctx, &mut venv, &mut state, opts, progress,
        ));
    }
    signals::check()?;
    run_checks(&libs, &mut reports, &venv, progress);
    Ok(reports)
}

/// The active libraries, or those named (which must exist and be active).
fn select<'m>(model: &'m Model, names: &[String]) -> Result<Vec<&'m Lib>> {
    if names.is_empty() {
        return Ok(model
            .libs
            .iter()
            .filter(|l| l.spec.status == Status::Active)
            .collect());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for name in names {
        let Some(lib) = model.lib(name) else {
            let known: Vec<&str> = model.libs.iter().map(|l| l.name.as_str()).collect();
            bail!(
                "unknown library `{name}` (libraries: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        if lib.spec.status != Status::Active {
            bail!(
                "library `{name}` is {}, not active",
                lib.spec.status.as_str()
            );
        }
        if seen.insert(name.as_str()) {
            out.push(lib);
        }
    }
    Ok(out)
}

/// One `libs` run per workspace at a time: two installers writing one venv break it.
fn lock(root: &Path, progress: &Progress) -> Result<fs::File> {
    let dir = root.join(".xtask");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("libs.lock");
    let file = fs::File::create(&path).with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            progress.line("waiting for another `libs` run on this workspace");
            file.lock()
                .with_context(|| format!("lock {}", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("lock {}", path.display()))
        }
    }
    Ok(file)
}

fn pth_name(lib: &str) -> String {
    format!("xtask-{lib}.pth")
}

/// Removes the path entries and state of libraries that are no longer in the workspace.
fn prune(model: &Model, venv: &Venv, state: &mut State, progress: &Progress) -> Result<()> {
    let known = |name: &str| model.libs.iter().any(|l| l.name == name);
    let mut gone: BTreeSet<String> = state.libs.keys().filter(|n| !known(n)).cloned().collect();
    if let Ok(dir) = fs::read_dir(&venv.info.purelib) {
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file
                .strip_prefix("xtask-")
                .and_then(|f| f.strip_suffix(".pth"))
            {
                if !known(name) {
                    gone.insert(name.to_string());
                }
            }
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    for name in &gone {
        let _ = fs::remove_file(venv.info.purelib.join(pth_name(name)));
        state.libs.remove(name);
        progress.line(&format!(
            "{name}: no longer in the workspace; its path entry and state are removed"
        ));
    }
    state.save(&venv.dir)
}

struct Ctx {
    installer: Installer,
    uv: Option<PathBuf>,
    uv_env: Vec<(&'static str, std::ffi::OsString)>,
}

/// Where a library's files are and what installing it means.
struct Plan {
    dir: PathBuf,
    /// `<source>/<import_root>`, absolute and resolved.
    import_root: PathBuf,
    packaged: bool,
    requirements: Option<PathBuf>,
    packages: Vec<String>,
}

impl Plan {
    fn mode(&self) -> &'static str {
        if self.packaged {
            "editable"
        } else {
            "path-entry"
        }
    }

    /// Whether an installer has to run (always for packaged libraries).
    fn needs_installer(&self) -> bool {
        self.packaged || self.requirements.is_some() || !self.packages.is_empty()
    }
}

fn plan(model: &Model, lib: &Lib) -> Result<Plan> {
    let spec = &lib.spec;
    let source = spec
        .source
        .as_ref()
        .with_context(|| format!("`{}` has no [source]", lib.name))?;
    let dir = sources::dir_of(model, &lib.name, source)?;
    if !dir.is_dir() {
        if source.git.is_some() && source.path.is_none() {
            bail!(
                "its source is not fetched yet ({} is missing): run `cargo xtask sources {}`",
                dir.display(),
                lib.name
            );
        }
        bail!("its source directory {} does not exist", dir.display());
    }
    let dir = fs::canonicalize(&dir).with_context(|| format!("resolve {}", dir.display()))?;
    let import_root = dir.join(&spec.import_root);
    if !import_root.is_dir() {
        bail!(
            "its import root `{}` is not a directory in {}",
            spec.import_root,
            dir.display()
        );
    }
    let import_root = fs::canonicalize(&import_root)?;
    let requirements = match &spec.requirements {
        Some(r) => {
            let p = dir.join(r);
            if !p.is_file() {
                bail!("its requirements file {} does not exist", p.display());
            }
            Some(p)
        }
        None => None,
    };
    Ok(Plan {
        packaged: PACKAGING.iter().any(|f| dir.join(f).is_file()),
        dir,
        import_root,
        requirements,
        packages: spec.packages.clone(),
    })
}

/// sha256 over everything that defines a library's install: the installer (when one runs),
/// the mode, the source directory and import root, the content of each packaging file (or its
/// absence), the requirements file's path and content, and the package list. Files a
/// requirements file includes with `-r` are not followed (`--force` reinstalls).
fn fingerprint(plan: &Plan, installer: Installer) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |key: &str, value: &[u8]| {
        h.update((key.len() as u64).to_le_bytes());
        h.update(key.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("format", b"1");
    field("mode", plan.mode().as_bytes());
    if plan.needs_installer() {
        field("installer", installer.as_str().as_bytes());
    }
    field("dir", plan.dir.as_os_str().as_encoded_bytes());
    field(
        "import_root",
        plan.import_root.as_os_str().as_encoded_bytes(),
    );
    for f in PACKAGING {
        let p = plan.dir.join(f);
        match fs::read(&p) {
            Ok(bytes) => field(f, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => field(f, b"\0absent"),
            Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
        }
    }
    if let Some(r) = &plan.requirements {
        field("requirements", r.as_os_str().as_encoded_bytes());
        let bytes = fs::read(r).with_context(|| format!("read {}", r.display()))?;
        field("requirements-content", &bytes);
    }
    field("packages", plan.packages.join("\n").as_bytes());
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The install command for a library: editable DIR (packaged), requirements, packages. Package
/// specs come last, after `--`, as separate argv entries.
fn install_command(plan: &Plan, ctx: &Ctx, venv: &Venv) -> Command {
    let mut c = match (ctx.installer, &ctx.uv) {
        (Installer::Uv, Some(uv)) => {
            let mut c = Command::new(uv);
            c.args(["pip", "install", "--python"])
                .arg(&venv.python)
                .envs(ctx.uv_env.iter().map(|(k, v)| (k, v)))
                .env_remove("VIRTUAL_ENV");
            c
        }
        _ => {
            let mut c = Command::new(&venv.python);
            c.args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ]);
            c
        }
    };
    if plan.packaged {
        c.arg("-e").arg(&plan.dir);
    }
    if let Some(r) = &plan.requirements {
        c.arg("-r").arg(r);
    }
    if !plan.packages.is_empty() {
        c.arg("--").args(&plan.packages);
    }
    c
}

fn install(
    model: &Model,
    lib: &Lib,
    ctx: &Ctx,
    venv: &mut Venv,
    state: &mut State,
    opts: &Options,
    progress: &Progress,
) -> LibReport {
    let mut report = LibReport {
        name: lib.name.clone(),
        installs: Vec::new(),
        checks: Vec::new(),
        outcome: Outcome::Unchanged,
        mode: "",
        installer: None,
        path_entry: None,
        seconds: 0.0,
    };
    let started = Instant::now();
    let result = (|| -> Result<()> {
        let plan = plan(model, lib)?;
        report.mode = plan.mode();
        let hash = fingerprint(&plan, ctx.installer)?;
        let pth = venv.info.purelib.join(pth_name(&lib.name));
        let pth_text = format!("{}\n", plan.import_root.display());
        let pth_ok = plan.packaged || fs::read_to_string(&pth).is_ok_and(|t| t == pth_text);
        let recorded = state.libs.get(&lib.name).map(|s| s.hash.as_str());
        if !opts.force && recorded == Some(hash.as_str()) && pth_ok {
            return Ok(());
        }
        report.outcome = Outcome::Installed;
        let task = progress.task(&lib.name, &format!("installing ({})", what(&plan, ctx)));
        // Forget the old install first: if this one does not finish, the next run redoes it.
        if state.libs.remove(&lib.name).is_some() {
            state.save(&venv.dir)?;
        }
        let done = (|| -> Result<()> {
            if plan.packaged {
                // A library that gained packaging: its path entry would shadow nothing, but it
                // is no longer ours to keep.
                let _ = fs::remove_file(&pth);
            } else {
                let tmp = venv.info.purelib.join(format!(
                    ".{}.{}.tmp",
                    pth_name(&lib.name),
                    std::process::id()
                ));
                state::write_atomic(&tmp, &pth, pth_text.as_bytes())?;
                report.path_entry = Some(pth.clone());
            }
            if plan.needs_installer() {
                if ctx.installer == Installer::Pip {
                    python::ensure_pip(venv, progress)?;
                }
                let mut cmd = install_command(&plan, ctx, venv);
                report.installs.push(proc::display(&cmd));
                report.installer = Some(ctx.installer);
                proc::run(&mut cmd, None)?;
            }
            Ok(())
        })();
        report.seconds = started.elapsed().as_secs_f64();
        if let Err(e) = done {
            task.finish("FAILED");
            return Err(e);
        }
        state.libs.insert(
            lib.name.clone(),
            LibState {
                hash,
                mode: plan.mode().to_string(),
                installer: report.installer,
                source: plan.dir.clone(),
                commands: report.installs.clone(),
                installed_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            },
        );
        state.save(&venv.dir)?;
        task.finish(&format!(
            "installed ({}, {:.1}s)",
            what(&plan, ctx),
            report.seconds
        ));
        Ok(())
    })();
    match result {
        Ok(()) if report.outcome == Outcome::Unchanged => {
            progress.line(&format!("{}: unchanged", lib.name));
        }
        Ok(()) => {}
        Err(e) => {
            let why = format!("{e:#}");
            progress.line(&format!("{}: install FAILED: {why}", lib.name));
            report.outcome = Outcome::Failed(why);
            report.seconds = started.elapsed().as_secs_f64();
        }
    }
    report
}

/// How a library is installed, for the progress line: `uv`, `path entry + pip`, ...
fn what(plan: &Plan, ctx: &Ctx) -> String {
    match (plan.packaged, plan.needs_installer()) {
        (true, _) => ctx.installer.as_str().to_string(),
        (false, true) => format!("path entry + {}", ctx.installer.as_str()),
        (false, false) => "path entry".to_string(),
    }
}

/// Runs every library's import checks with the venv's python, one process per library, the
/// libraries in parallel; a library whose install failed has its checks marked as not run.
fn run_checks(libs: &[&Lib], reports: &mut [LibReport], venv: &Venv, progress: &Progress) {
    let results: Vec<Vec<(String, std::result::Result<(), String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = libs
            .iter()
            .zip(reports.iter())
            .map(|(lib, report)| {
                let checks = &lib.spec.import_checks;
                let failed = matches!(report.outcome, Outcome::Failed(_));
                s.spawn(move || {
                    if failed {
                        checks
                            .iter()
                            .map(|c| (c.clone(), Err("not run: the install failed".into())))
                            .collect()
                    } else {
                        check(&venv.python, checks)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("check thread"))
            .collect()
    });
    for (report, checks) in reports.iter_mut().zip(results) {
        for (import, result) in &checks {
            match result {
                Ok(()) => progress.line(&format!("{}: import {import} ok", report.name)),
                Err(e) => progress.line(&format!("{}: import {import} FAILED: {e}", report.name)),
            }
        }
        report.checks = checks;
    }
}

/// Runs `checks` in one process of `python`.
fn check(python: &Path, checks: &[String]) -> Vec<(String, std::result::Result<(), String>)> {
    if checks.is_empty() {
        return Vec::new();
    }
    let mut cmd = Command::new(python);
    // -I: the venv alone decides what imports (no PYTHONPATH, no current directory).
    cmd.args(["-I", "-c", CHECK_PY]).args(checks);
    let out = match proc::output(&mut cmd, None) {
        Ok(o) => o,
        Err(e) => {
            let why = format!("cannot run {}: {e:#}", python.display());
            return checks
                .iter()
                .map(|c| (c.clone(), Err(why.clone())))
                .collect();
        }
    };
    #[derive(Deserialize)]
    struct Line {
        check: String,
        ok: bool,
        error: Option<String>,
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Line> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(CHECK_MARK))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    checks
        .iter()
        .map(|c| {
            let result = match lines.iter().find(|l| &l.check == c) {
                Some(l) if l.ok => Ok(()),
                Some(l) => Err(l.error.clone().unwrap_or_else(|| "failed".into())),
                None => Err(format!(
                    "the check process ended ({}) without a result: {}",
                    out.status,
                    proc::tail(&String::from_utf8_lossy(&out.stderr), 1)
                )),
            };
            (c.clone(), result)
        })
        .collect()
}

/// `2 installed, 1 unchanged, 0 failed (3 installs); import checks: 5 passed, 0 failed`.
pub fn summary(reports: &[LibReport]) -> String {
    let count = |o: fn(&Outcome) -> bool| reports.iter().filter(|r| o(&r.outcome)).count();
    let installed = count(|o| *o == Outcome::Installed);
    let unchanged = count(|o| *o == Outcome::Unchanged);
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let installs: usize = reports.iter().map(|r| r.installs.len()).sum();
    let checks: Vec<bool> = reports
        .iter()
        .flat_map(|r| r.checks.iter().map(|(_, c)| c.is_ok()))
        .collect();
    let passed = checks.iter().filter(|ok| **ok).count();
    format!(
        "libs: {installed} installed, {unchanged} unchanged, {failed} failed ({installs} install{}{}); \
         import checks: {passed} passed, {} failed",
        if installs == 1 { "" } else { "s" },
        if installed == 0 && failed == 0 {
            ": nothing changed"
        } else {
            ""
        },
        checks.len() - passed
    )
}

/// The failures, one line each: `plain-lib: install failed: ...`, `plain-lib: import x: ...`.
pub fn failures(reports: &[LibReport]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        if let Outcome::Failed(why) = &r.outcome {
            out.push(format!(
                "{}: install failed: {}",
                r.name,
                why.lines().next().unwrap_or("")
            ));
        }
        for (import, result) in &r.checks {
            if let Err(e) = result {
                out.push(format!("{}: import check `{import}` failed: {e}", r.name));
            }
        }
    }
    out
}

fn to_json(venv: &Path, reports: &[LibReport]) -> serde_json::Value {
    let libs: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let (outcome, error) = match &r.outcome {
                Outcome::Installed => ("installed", None),
                Outcome::Unchanged => ("unchanged", None),
                Outcome::Failed(e) => ("failed", Some(e.clone())),
            };
            serde_json::json!({
                "name": r.name,
                "outcome": outcome,
                "error": error,
                "mode": r.mode,
                "installer": r.installer,
                "installs": r.installs,
                "path_entry": r.path_entry,
                "seconds": r.seconds,
                "checks": r.checks.iter().map(|(import, res)| serde_json::json!({
                    "import": import,
                    "ok": res.is_ok(),
                    "error": res.as_ref().err(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "venv": venv,
        "installs": reports.iter().map(|r| r.installs.len()).sum::<usize>(),
        "ok": reports.iter().all(LibReport::ok),
        "libs": libs,
    })
}

pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    signals::install();
    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    let opts = Options {
        installer: args.installer,
        install_uv: args.install_uv,
        force: args.force,
    };
    let progress = Progress::new();
    let started = Instant::now();
    let reports = sync_with(&model, &args.names, &opts, &progress)?;
    let failures = failures(&reports);
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    let line = format!(
        "{} in {:.1}s",
        summary(&reports),
        started.elapsed().as_secs_f64()
    );
    if args.json {
        let venv = std::path::absolute(root)?.join(".venv");
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&venv, &reports))?
        );
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
