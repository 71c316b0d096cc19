//! How long `up` takes when there is nothing to do, on the local host and over SSH, how long
//! `plan` takes, and how long a replaced service's ports go unanswered (as `up` logs it).
//! Prints numbers; asserts nothing. Needs Docker.
//!
//!   cargo bench -p tests --bench hosts
//!
//! Targets: a no-op `up` under 1 s locally and under 2 s over SSH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tests::sshhost::{Options, SshHost};
use tests::{copy_tree, fixtures, repo_root, text, xtask_bin, TempDir};

const RUNS: usize = 5;

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker")
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@xtask.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The fixture as a committed repository with a venv and its own MCP client config; removes
/// what its hosts' deployments made, and the image tags made from its commit, when dropped.
struct Ws {
    root: PathBuf,
    envs: Vec<(String, String)>,
    hosts: Vec<String>,
    rev: String,
    _dir: TempDir,
}

impl Ws {
    fn new() -> Ws {
        let dir = TempDir::new("bench-hosts");
        let root = dir.path().join("eco");
        copy_tree(&fixtures().join("eco"), &root);
        std::fs::copy(repo_root().join(".gitignore"), root.join(".gitignore")).unwrap();
        for args in [
            &["init", "-q"][..],
            &["add", "-A"],
            &["commit", "-qm", "fixture"],
        ] {
            assert!(git(&root, args).status.success());
        }
        let rev = text(&git(&root, &["rev-parse", "--short=12", "HEAD"]).stdout)
            .trim()
            .to_string();
        let venv = Command::new("python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(root.join(".venv"))
            .output()
            .unwrap();
        assert!(venv.status.success());
        let mcp = dir.path().join("claude_desktop_config.json");
        Ws {
            root,
            envs: vec![("XTASK_MCP_CLIENT_CONFIG".into(), mcp.display().to_string())],
            hosts: vec!["local".into()],
            rev,
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(xtask_bin())
            .arg("--workspace")
            .arg(&self.root)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "xtask {args:?}:\n{all}");
        all
    }

    /// Median wall time of `RUNS` runs of `args`, each expected to exit with `code`.
    fn median(&self, args: &[&str], code: i32) -> Duration {
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let out = self.run(args);
                let took = t.elapsed();
                assert_eq!(
                    out.status.code(),
                    Some(code),
                    "{args:?}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
                took
            })
            .collect();
        times.sort();
        times[RUNS / 2]
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.root.join(rel);
        let t = std::fs::read_to_string(&path).unwrap();
        assert!(t.contains(from), "{from} in {rel}");
        std::fs::write(&path, t.replacen(from, to, 1)).unwrap();
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = self.run(&["down", host, "--volumes"]);
            let filter = format!("label=xtask.host={host}");
            for id in text(&docker(&["ps", "-aq", "--filter", &filter]).stdout).split_whitespace() {
                docker(&["rm", "-f", id]);
            }
        }
        let out = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        for tag in text(&out.stdout).lines() {
            if let Some((repo, t)) = tag.rsplit_once(':') {
                if repo.starts_with("xtask/") && !self.rev.is_empty() && t.starts_with(&self.rev) {
                    docker(&["image", "rm", tag]);
                }
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// The window `up` logged for a replace: "its ports were unanswered for X s".
fn window(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.split_once("its ports were unanswered for ")
                .map(|(_, w)| w.trim_end_matches(')').to_string())
        })
        .unwrap_or_else(|| "(not logged)".into())
}

fn main() {
    let ws = Ws::new();

    // Local host.
    let t = Instant::now();
    ws.ok(&["up", "local"]);
    println!(
        "{:<42} {}",
        "up local, from nothing (images cached):",
        secs(t.elapsed())
    );
    let up = ws.median(&["up", "local"], 0);
    let plan = ws.median(&["plan", "local"], 0);
    println!(
        "{:<42} {}  (target < 1 s)",
        &format!("up local, no-op (median of {RUNS}):"),
        secs(up)
    );
    println!(
        "{:<42} {}",
        &format!("plan local, no changes (median of {RUNS}):"),
        secs(plan)
    );
    ws.edit(
        "services/notes-api/service.toml",
        "APP_ENV = \"smoke\"",
        "APP_ENV = \"bench\"",
    );
    let t = Instant::now();
    let out = ws.ok(&["up", "local"]);
    println!(
        "{:<42} {}  ports unanswered for {}",
        "up local, env change (one replace):",
        secs(t.elapsed()),
        window(&out)
    );
    ws.ok(&["down", "local", "--volumes"]);

    // Over SSH: the test host shares this machine's network, as a real host's docker would.
    let host = SshHost::start_with(Options {
        host_network: true,
        ..Options::default()
    });
    let mut ws = ws;
    ws.edit("hosts/testbox.toml", "deploy@127.0.0.1:2222", &host.spec());
    ws.envs.extend(host.envs());
    ws.hosts.push("testbox".into());
    let t = Instant::now();
    ws.ok(&["up", "testbox"]);
    println!(
        "{:<42} {}",
        "up testbox, from nothing (images cached):",
        secs(t.elapsed())
    );
    let up = ws.median(&["up", "testbox"], 0);
    let plan = ws.median(&["plan", "testbox"], 0);
    println!(
        "{:<42} {}  (target < 2 s)",
        &format!("up testbox, no-op (median of {RUNS}):"),
        secs(up)
    );
    println!(
        "{:<42} {}",
        &format!("plan testbox, no changes (median of {RUNS}):"),
        secs(plan)
    );
    ws.edit(
        "services/notes-api/service.toml",
        "APP_ENV = \"bench\"",
        "APP_ENV = \"bench2\"",
    );
    let t = Instant::now();
    let out = ws.ok(&["up", "testbox"]);
    println!(
        "{:<42} {}  ports unanswered for {}",
        "up testbox, env change (one replace):",
        secs(t.elapsed()),
        window(&out)
    );
    drop(ws);
    drop(host);
}
