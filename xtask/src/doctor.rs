//! `cargo xtask doctor`: every tool the other commands need, reported at once with versions,
//! what is missing and how to get it.

use std::process::{Command, ExitCode, Stdio};

struct Tool {
    name: &'static str,
    why: &'static str,
    install: &'static str,
    required: bool,
}

pub struct Finding {
    pub name: &'static str,
    pub ok: bool,
    pub required: bool,
    pub detail: String,
    pub install: &'static str,
    pub why: &'static str,
}

/// Runs `argv` and returns its first non-empty output line (stdout, else stderr: `ssh -V`
/// prints to stderr), or why it could not run.
fn version_line(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => e.to_string(),
        })?;
    let text = if out.stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    if out.status.success() {
        Ok(line)
    } else {
        Err(if line.is_empty() {
            format!("exited with {}", out.status)
        } else {
            line
        })
    }
}

/// `Python 3.11.7` -> (3, 11).
fn python_version(line: &str) -> Option<(u32, u32)> {
    let v = line.split_whitespace().nth(1)?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn findings() -> Vec<Finding> {
    // Every tool is asked at once: each answer takes a process start (docker's a round trip to
    // the engine), and `onboard` runs this every time.
    let ask = |argv: &'static [&'static str]| move || version_line(argv);
    let joined = |h: std::thread::ScopedJoinHandle<'_, Result<String, String>>| {
        h.join()
            .unwrap_or_else(|_| Err("internal error: panicked".into()))
    };
    let (docker, git, python, uv, pip, ssh, debootstrap) = std::thread::scope(|s| {
        let docker = s.spawn(ask(&[
            "docker",
            "version",
            "--format",
            "engine {{.Server.Version}} (client {{.Client.Version}})",
        ]));
        let git = s.spawn(ask(&["git", "--version"]));
        let python = s.spawn(ask(&["python3", "--version"]));
        let uv = s.spawn(ask(&["uv", "--version"]));
        // Importing the package answers as well as `pip --version`, in a tenth of the time.
        let pip = s.spawn(ask(&[
            "python3",
            "-c",
            "import pip; print('pip', pip.__version__)",
        ]));
        let ssh = s.spawn(ask(&["ssh", "-V"]));
        let debootstrap = s.spawn(debootstrap_version);
        (
            joined(docker),
            joined(git),
            joined(python),
            joined(uv),
            joined(pip),
            joined(ssh),
            joined(debootstrap),
        )
    });
    let mut out = Vec::new();
    let mut push = |t: Tool, result: Result<String, String>| {
        let (ok, detail) = match result {
            Ok(v) => (true, v),
            Err(e) => (false, e),
        };
        out.push(Finding {
            name: t.name,
            ok,
            required: t.required,
            detail,
            install: t.install,
            why: t.why,
        });
    };

    // The engine, not only the client: `docker version` fails when the daemon is unreachable.
    push(
        Tool {
            name: "docker",
            why: "build images, smoke tests, local host",
            install: "apt-get install docker.io (and start the daemon: systemctl start docker)",
            required: true,
        },
        docker,
    );
    push(
        Tool {
            name: "git",
            why: "component sources",
            install: "apt-get install git",
            required: true,
        },
        git,
    );
    let py = python.and_then(|line| match python_version(&line) {
        Some(v) if v >= (3, 11) => Ok(line),
        Some(_) => Err(format!("{line} is older than 3.11")),
        None => Err(format!("cannot read a version from `{line}`")),
    });
    push(
        Tool {
            name: "python3 >= 3.11",
            why: "the venv with the editable libraries",
            install: "apt-get install python3 python3-venv (Debian 12 has 3.11)",
            required: true,
        },
        py,
    );
    let installer = match (&uv, &pip) {
        (Ok(u), _) => Ok(u.clone()),
        (Err(_), Ok(p)) => Ok(format!(
            "{p} (uv not found: installs will be slower; `pip install uv` makes them fast)"
        )),
        (Err(_), Err(e)) => Err(format!("neither uv nor pip: {e}")),
    };
    push(
        Tool {
            name: "uv or pip",
            why: "install Python libraries and requirements",
            install: "pip install uv, or apt-get install python3-pip",
            required: true,
        },
        installer,
    );
    push(
        Tool {
            name: "ssh",
            why: "reach ssh hosts (up/plan/status HOST)",
            install: "apt-get install openssh-client",
            required: true,
        },
        ssh,
    );
    push(
        Tool {
            name: "debootstrap",
            why: "make base images on a machine without a registry",
            install: "apt-get install debootstrap",
            required: true,
        },
        debootstrap,
    );
    out
}

/// debootstrap has no `--version` that works without root on every release; ask dpkg, and fall
/// back to finding the program.
fn debootstrap_version() -> Result<String, String> {
    match version_line(&["dpkg-query", "-W", "-f", "${Version}", "debootstrap"]) {
        Ok(v) if !v.is_empty() => Ok(format!("debootstrap {v}")),
        _ => version_line(&["debootstrap", "--version"]),
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    let findings = findings();
    let width = findings.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let mut missing = Vec::new();
    for f in &findings {
        let mark = if f.ok {
            "ok     "
        } else if f.required {
            "MISSING"
        } else {
            "missing"
        };
        println!("{mark}  {:width$}  {}", f.name, f.detail);
        if !f.ok {
            missing.push(f);
        }
    }
    if missing.is_empty() {
        println!("\nall {} tools present", findings.len());
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nto install:");
    for f in &missing {
        println!("  {:width$}  {}  (needed to {})", f.name, f.install, f.why);
    }
    if missing.iter().any(|f| f.required) {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
