//! Docker helpers shared by the end-to-end tests that need an engine: asking it what exists,
//! removing only what a test made, and guards that clean up even when an assertion fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tests::{copy_tree, fixtures, text, TempDir};

/// Runs `docker ARGS`; panics with its output when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {} failed:\n{}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `docker ARGS`, ignoring failure (cleanup).
pub fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn lines(s: String) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Containers, networks and volumes carrying label `xtask.smoke=<run id>`, as
/// `kind name` strings (empty when the run left nothing).
pub fn run_objects(run_id: &str) -> Vec<String> {
    let filter = format!("label=xtask.smoke={run_id}");
    let mut found = Vec::new();
    for (kind, args) in [
        (
            "container",
            vec!["ps", "-a", "--format", "{{.Names}}", "--filter", &filter],
        ),
        (
            "network",
            vec![
                "network",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &filter,
            ],
        ),
        (
            "volume",
            vec!["volume", "ls", "--format", "{{.Name}}", "--filter", &filter],
        ),
    ] {
        for name in lines(docker(&args)) {
            found.push(format!("{kind} {name}"));
        }
    }
    found
}

/// Removes everything labelled with a smoke run id (only ids this test process started).
pub fn remove_run_objects(run_id: &str) {
    let filter = format!("label=xtask.smoke={run_id}");
    let ids = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| lines(text(&o.stdout)))
            .unwrap_or_default()
    };
    for c in ids(&["ps", "-aq", "--filter", &filter]) {
        docker_quiet(&["rm", "-f", "-v", &c]);
    }
    for n in ids(&["network", "ls", "-q", "--filter", &filter]) {
        docker_quiet(&["network", "rm", &n]);
    }
    for v in ids(&["volume", "ls", "-q", "--filter", &filter]) {
        docker_quiet(&["volume", "rm", "-f", &v]);
    }
}

/// Every image reference `repo:*` present in the engine.
pub fn image_tags(repo: &str) -> Vec<String> {
    lines(docker(&[
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        repo,
    ]))
}

/// The id of an image reference, or None.
pub fn image_id(reference: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .expect("run docker");
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_string())
}

/// One label of an image.
pub fn image_label(reference: &str, label: &str) -> String {
    docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels {label:?}}}}}"),
        reference,
    ])
    .trim()
    .to_string()
}

/// Removes image references on drop: tags made by a test for content only it built.
#[derive(Default)]
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for r in &self.0 {
            docker_quiet(&["image", "rm", r]);
        }
    }
}

/// The image lines of a `build` (`NAME: cached REF` / `NAME: built REF in Xs`) as
/// `(service, "cached"|"built", reference)`.
pub fn image_lines(stderr: &str) -> Vec<(String, String, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let (svc, rest) = l.split_once(": ")?;
            let mut words = rest.split_whitespace();
            let what = words.next()?;
            if what != "cached" && what != "built" {
                return None;
            }
            let reference = words.next()?;
            reference
                .starts_with(&format!("xtask/{svc}:"))
                .then(|| (svc.to_string(), what.to_string(), reference.to_string()))
        })
        .collect()
}

/// A temporary copy of the fixture workspace.
pub fn eco_copy(prefix: &str) -> TempDir {
    let dir = TempDir::new(prefix);
    copy_tree(&fixtures().join("eco"), dir.path());
    dir
}

/// Replaces exactly one occurrence of `from` in `path` (panics when there is not exactly one,
/// so a changed fixture breaks the test loudly instead of testing nothing).
pub fn edit_once(path: &Path, from: &str, to: &str) {
    let old = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        old.matches(from).count(),
        1,
        "{} should contain {from:?} exactly once",
        path.display()
    );
    std::fs::write(path, old.replacen(from, to, 1)).unwrap();
}

/// Serializes the tests of one binary that drive the engine: on a small machine parallel
/// docker work only makes every test slower, and a smoke run's sweep must not race another
/// test's deliberately killed run.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child xtask whose stderr lines arrive on a channel (and are kept); killed on drop.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(workspace: &Path, args: &[&str]) -> Running {
        Running::spawn(workspace, args, false)
    }

    /// In a process group of its own (led by xtask), as a terminal runs a foreground job, so
    /// a signal can go to the whole group the way Ctrl-C does.
    pub fn start_as_job(workspace: &Path, args: &[&str]) -> Running {
        Running::spawn(workspace, args, true)
    }

    fn spawn(workspace: &Path, args: &[&str], own_group: bool) -> Running {
        let mut cmd = Command::new(tests::xtask_bin());
        if own_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .arg("--workspace")
            .arg(workspace)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xtask");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        Running {
            child,
            lines: rx,
            stderr: Vec::new(),
            stdout: Some(stdout),
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Reads stderr until a line satisfies `pred` (returns it) or `timeout` passes (panics
    /// with everything read so far).
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "no such line within {timeout:?}; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "xtask closed stderr before such a line; stderr:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for the exit; returns the exit code (None when killed by a signal),
    /// the whole stdout and the whole stderr.
    pub fn finish(&mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "xtask did not exit within {timeout:?}; stderr so far:\n{}",
                    self.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.stderr.push(line);
        }
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status.code(), stdout, self.stderr.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The run id a smoke run announces (`smoke run xsXXXXXXXX (N services)`).
pub fn run_id_of(line: &str) -> Option<String> {
    let id = line.strip_prefix("smoke run ")?.split_whitespace().next()?;
    (id.len() == 10 && id.starts_with("xs")).then(|| id.to_string())
}

/// Removes whatever smoke runs named here left behind, on drop (after the assertions that
/// nothing was left, so a tool bug fails the test without leaking into the engine).
#[derive(Default)]
pub struct RunGuard(pub Vec<String>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        for id in &self.0 {
            remove_run_objects(id);
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("xtask-{id}")));
        }
    }
}
