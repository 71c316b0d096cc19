//! `cargo xtask sources` against temporary workspaces whose component sources are real git
//! repositories made at test time (fixed authors and dates), reached through the mirror
//! setting. Every remote URL is under `https://git.invalid/`, which never resolves, and every
//! run has its HTTP(S) proxy pointed at a listener of the test: any attempt to reach a remote
//! is counted there, so "nothing touched the network" is an assertion, not a hope.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::{text, xtask_bin, TempDir};

const REMOTE: &str = "https://git.invalid/org/";

/// git with a fixed identity and no user or system configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, args, 0)
}

/// git at a fixed date (`day` of January 2024), so commit ids are the same on every run.
fn git_at(dir: &Path, args: &[&str], day: u32) -> String {
    let date = format!("2024-01-{:02}T12:00:00+00:00", day.max(1));
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=xtask test",
            "-c",
            "user.email=test@xtask.invalid",
        ])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// A local HTTP(S) proxy that counts connections and answers none: what a run would use to
/// reach a remote. Its thread lives as long as the test process.
struct Proxy {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut c) = conn {
                    // Read a little of the request, then hang up: the remote is unreachable.
                    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = c.read(&mut [0u8; 512]);
                }
            }
        });
        Proxy { url, hits }
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A temporary workspace (`ws/`) beside a directory of upstream repositories (`mirrors/`).
struct Ws {
    _tmp: TempDir,
    root: PathBuf,
    mirrors: PathBuf,
    proxy: Proxy,
}

/// Commit ids of an upstream repository made by [`Ws::upstream`].
struct Upstream {
    dir: PathBuf,
    /// Commit 1 (tag `v1`), commit 2 (tag `v2`, annotated tag `r2`, branch `main`).
    c1: String,
    c2: String,
}

impl Ws {
    fn new(prefix: &str) -> Ws {
        let tmp = TempDir::new(prefix);
        let root = tmp.path().join("ws");
        let mirrors = tmp.path().join("mirrors");
        for d in ["services", "libs", "hosts"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&mirrors).unwrap();
        Ws {
            _tmp: tmp,
            root,
            mirrors,
            proxy: Proxy::start(),
        }
    }

    /// `mirrors/NAME`: a repository with two commits of `src/NAME.py`.
    fn upstream(&self, name: &str) -> Upstream {
        let dir = self.mirrors.join(name);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        git(&dir, &["init", "-q"]);
        let module = format!("src/{}.py", name.replace('-', "_"));
        std::fs::write(dir.join(&module), "VERSION = 1\n").unwrap();
        git_at(&dir, &["add", "-A"], 1);
        git_at(&dir, &["commit", "-qm", "one"], 1);
        git_at(&dir, &["tag", "v1"], 1);
        let c1 = git(&dir, &["rev-parse", "HEAD"]);
        std::fs::write(dir.join(&module), "VERSION = 2\n").unwrap();
        git_at(&dir, &["commit", "-qam", "two"], 2);
        git_at(&dir, &["tag", "v2"], 2);
        git_at(&dir, &["tag", "-a", "r2", "-m", "release 2"], 2);
        let c2 = git(&dir, &["rev-parse", "HEAD"]);
        Upstream { dir, c1, c2 }
    }

    fn url(name: &str) -> String {
        format!("{REMOTE}{name}")
    }

    fn lib(&self, name: &str, repo: &str, rev: &str) {
        let dir = self.root.join("libs").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("lib.toml"),
            format!(
                "name = \"{name}\"\ndescription = \"test\"\nimport_root = \"src\"\n\n\
                 [source]\ngit = \"{}\"\nrev = \"{rev}\"\n",
                Ws::url(repo)
            ),
        )
        .unwrap();
    }

    fn service(&self, name: &str, repo: &str, rev: &str) {
        let dir = self.root.join("services").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("service.toml"),
            format!(
                "name = \"{name}\"\ndescription = \"test\"\nstatus = \"active\"\n\
                 kind = \"host-managed\"\n\n[source]\ngit = \"{}\"\nrev = \"{rev}\"\n",
                Ws::url(repo)
            ),
        )
        .unwrap();
    }

    /// `mirrors.toml` mapping the remote to the upstream directory.
    fn mirror_file(&self) {
        std::fs::write(
            self.root.join("mirrors.toml"),
            format!(
                "# local copies of the remotes\n[mirrors]\n\"{REMOTE}\" = \"{}/\"\n",
                self.mirrors.display()
            ),
        )
        .unwrap();
    }

    fn env_mirror(&self) -> String {
        format!("{REMOTE}={}/", self.mirrors.display())
    }

    /// The command `xtask --workspace ws sources ARGS`, with the proxy, no user git config, no
    /// mirrors from the caller's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(xtask_bin());
        cmd.arg("--workspace")
            .arg(&self.root)
            .arg("sources")
            .args(args)
            .env_remove("XTASK_MIRRORS")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        for var in ["no_proxy", "NO_PROXY"] {
            cmd.env_remove(var);
        }
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env(var, &self.proxy.url);
        }
        cmd
    }

    fn sources(&self, args: &[&str]) -> Run {
        self.sources_env(args, &[])
    }

    fn sources_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run(cmd.output().unwrap())
    }

    fn checkout(&self, name: &str) -> PathBuf {
        self.root.join(".xtask/sources").join(name)
    }

    fn head(&self, name: &str) -> String {
        git(&self.checkout(name), &["rev-parse", "HEAD"])
    }

    fn read(&self, name: &str, rel: &str) -> String {
        std::fs::read_to_string(self.checkout(name).join(rel)).unwrap()
    }

    /// Names under `.xtask/git` and `.xtask/sources` that start with `.tmp-`.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in [".xtask/git", ".xtask/sources"] {
            if let Ok(entries) = std::fs::read_dir(self.root.join(d)) {
                for e in entries.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with(".tmp-") {
                        out.push(format!("{d}/{n}"));
                    }
                }
            }
        }
        out
    }
}

struct Run(Output);

impl Run {
    fn ok(&self) -> bool {
        self.0.status.success()
    }
    fn stdout(&self) -> String {
        text(&self.0.stdout)
    }
    fn stderr(&self) -> String {
        text(&self.0.stderr)
    }
    fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }
    /// The report line of `component`.
    fn line(&self, component: &str) -> String {
        let prefix = format!("{component} (");
        let lines: Vec<String> = self
            .stderr()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 1, "one line for {component}:\n{}", self.all());
        lines[0].clone()
    }
    fn assert_ok(&self) -> &Run {
        assert!(self.ok(), "sources failed:\n{}", self.all());
        self
    }
}

fn short(id: &str) -> &str {
    &id[..12]
}

#[test]
fn sync_from_nothing_checks_out_the_pin_and_a_second_sync_fetches_nothing() {
    let ws = Ws::new("sources-first");
    let up = ws.upstream("notes");
    ws.lib("notes", "notes", "v1");
    ws.mirror_file();

    let first = ws.sources(&[]);
    first.assert_ok();
    let line = first.line("notes");
    assert!(
        line.starts_with(&format!(
            "notes (lib): v1 at {}, clean, at the pin, fetched (mirror): checked out",
            short(&up.c1)
        )),
        "{line}"
    );
    assert!(first.stdout().contains("1 fetched"), "{}", first.all());
    assert_eq!(ws.head("notes"), up.c1);
    assert_eq!(ws.read("notes", "src/notes.py"), "VERSION = 1\n");
    assert!(ws.root.join(".xtask/git/notes.git").is_dir());
    // The checkout is a repository of its own whose origin is the descriptor's remote.
    assert_eq!(
        git(&ws.checkout("notes"), &["remote", "get-url", "origin"]),
        Ws::url("notes")
    );
    assert_eq!(git(&ws.checkout("notes"), &["status", "--porcelain"]), "");

    let second = ws.sources(&[]);
    second.assert_ok();
    let line = second.line("notes");
    assert!(
        line.contains("clean, at the pin, not fetched (mirror): unchanged"),
        "{line}"
    );
    assert!(second.stdout().contains("0 fetched"), "{}", second.all());
    assert!(second.stdout().contains("1 unchanged"), "{}", second.all());
    assert_eq!(ws.head("notes"), up.c1);
    assert_eq!(ws.proxy.hits(), 0, "a run tried to reach a remote");
    // The upstream was only read.
    assert_eq!(git(&up.dir, &["status", "--porcelain"]), "");
}

#[test]
fn tag_and_commit_id_pins_both_work_and_are_not_fetched_again() {
    let ws = Ws::new("sources-pins");
    let up = ws.upstream("notes");
    ws.lib("by-tag", "notes", "v2");
    ws.service("by-annotated-tag", "notes", "r2");
    ws.lib("by-commit", "notes", &up.c1);
    ws.lib("by-short-commit", "notes", short(&up.c2));
    ws.mirror_file();

    let first = ws.sources(&[]);
    first.assert_ok();
    for (name, commit) in [
        ("by-tag", &up.c2),
        ("by-annotated-tag", &up.c2),
        ("by-commit", &up.c1),
        ("by-short-commit", &up.c2),
    ] {
        assert_eq!(&ws.head(name), commit, "{name}");
        let line = first.line(name);
        assert!(line.contains("fetched (mirror): checked out"), "{line}");
    }
    assert_eq!(ws.read("by-commit", "src/notes.py"), "VERSION = 1\n");
    assert_eq!(ws.read("by-tag", "src/notes.py"), "VERSION = 2\n");
    assert!(first
        .line("by-annotated-tag")
        .starts_with("by-annotated-tag (service): r2 at "));

    let second = ws.sources(&[]);
    second.assert_ok();
    for name in ["by-tag", "by-annotated-tag", "by-commit", "by-short-commit"] {
        let line = second.line(name);
        assert!(line.contains("not fetched (mirror): unchanged"), "{line}");
    }
    assert!(second.stdout().contains("0 fetched"), "{}", second.all());

    // Only the named component is synced.
    let one = ws.sources(&["by-commit"]);
    one.assert_ok();
    one.line("by-commit");
    assert!(!one.stderr().contains("by-tag ("), "{}", one.all());
    assert_eq!(ws.proxy.hits(), 0);
}

#[test]
fn a_branch_pin_is_fetched_every_sync_unless_offline() {
    let ws = Ws::new("sources-branch");
    let up = ws.upstream("notes");
    ws.lib("notes", "notes", "main");
    ws.mirror_file();

    ws.sources(&[]).assert_ok();
    assert_eq!(ws.head("notes"), up.c2);

    std::fs::write(up.dir.join("src/notes.py"), "VERSION = 3\n").unwrap();
    git_at(&up.dir, &["commit", "-qam", "three"], 3);
    let c3 = git(&up.dir, &["rev-parse", "HEAD"]);

    let offline = ws.sources(&["--offline"]);
    offline.assert_ok();
    let line = offline.line("notes");
    assert!(line.contains("not fetched (mirror): unchanged"), "{line}");
    assert_eq!(ws.head("notes"), up.c2);

    let online = ws.sources(&[]);
    online.assert_ok();
    let line = online.line("notes");
    assert!(
        line.starts_with(&format!(
            "notes (lib): main at {}, clean, at the pin, fetched (mirror): updated to the pin",
            short(&c3)
        )),
        "{line}"
    );
    assert_eq!(ws.head("notes"), c3);
    assert_eq!(ws.read("notes", "src/notes.py"), "VERSION = 3\n");
    assert_eq!(ws.proxy.hits(), 0);
}

#[test]
fn a_pin_that_does_not_exist_fails_naming_component_and_rev_after_syncing_the_others() {
    let ws = Ws::new("sources-missing");
    let up = ws.upstream("notes");
    ws.lib("good", "notes", "v1");
    ws.lib("bad-tag", "notes", "v9");
    ws.service(
        "bad-commit",
        "notes",
        "0123456789abcdef0123456789abcdef01234567",
    );
    ws.mirror_file();

    let run = ws.sources(&[]);
    assert_eq!(run.0.status.code(), Some(1), "{}", run.all());
    let err = run.stderr();
    assert!(
        err.contains("`bad-tag` (libs/bad-tag/lib.toml): revision `v9` does not exist in https://git.invalid/org/notes"),
        "{err}"
    );
    assert!(
        err.contains("`bad-commit` (services/bad-commit/service.toml): revision `0123456789abcdef0123456789abcdef01234567` does not exist"),
        "{err}"
    );
    // Every error is reported, and the good component was synced all the same.
    assert!(run.stdout().contains("2 failed"), "{}", run.all());
    assert_eq!(ws.head("good"), up.c1);
    assert!(!ws.checkout("bad-tag").exists());
    assert_eq!(ws.proxy.hits(), 0);
}

#[test]
fn an_unreachable_remote_without_a_mirror_fails_with_the_mirror_hint() {
    let ws = Ws::new("sources-unreachable");
    ws.upstream("notes");
    ws.lib("notes", "notes", "v1");
    ws.service("api", "api.git", "main");

    let run = ws.sources(&[]);
    assert_eq!(run.0.status.code(), Some(1), "{}", run.all());
    let err = run.stderr();
    for (name, descriptor, url) in [
        (
            "notes",
            "libs/notes/lib.toml",
            "https://git.invalid/org/notes",
        ),
        (
            "api",
            "services/api/service.toml",
            "https://git.invalid/org/api.git",
        ),
    ] {
        assert!(
            err.contains(&format!(
                "`{name}` ({descriptor}): could not fetch the source from {url}:"
            )),
            "{err}"
        );
    }
    // How to set a mirror, both ways, with an example line for this remote.
    assert!(err.contains("mirrors.toml"), "{err}");
    assert!(err.contains("[mirrors]"), "{err}");
    assert!(err.contains("\"https://git.invalid/org/\" = \""), "{err}");
    assert!(
        err.contains("XTASK_MIRRORS='https://git.invalid/org/="),
        "{err}"
    );
    // The remote was tried (through the test's proxy: the probe sees contacts) ...
    assert!(ws.proxy.hits() >= 1, "the remote was never tried");
    // ... and nothing half made stays behind.
    assert!(!ws.root.join(".xtask/git/notes.git").exists());
    assert!(!ws.checkout("notes").exists());
    assert_eq!(ws.leftovers(), Vec::<String>::new());
}

#[test]
fn with_a_mirror_the_unreachable_remote_is_never_contacted() {
    // From mirrors.toml.
    let ws = Ws::new("sources-mirror-file");
    let up = ws.upstream("notes");
    ws.lib("notes", "notes", "main");
    ws.mirror_file();
    ws.sources(&[]).assert_ok();
    ws.sources(&[]).assert_ok(); // a branch pin: fetched again, from the mirror
    assert_eq!(ws.head("notes"), up.c2);
    assert_eq!(ws.proxy.hits(), 0, "the remote was contacted");

    // From XTASK_MIRRORS, which replaces the file: a file pointing nowhere does not matter.
    let ws = Ws::new("sources-mirror-env");
    let up = ws.upstream("notes");
    ws.lib("notes", "notes", "main");
    std::fs::write(
        ws.root.join("mirrors.toml"),
        format!("[mirrors]\n\"{REMOTE}\" = \"/nonexistent/\"\n"),
    )
    .unwrap();
    let env = ws.env_mirror();
    let run = ws.sources_env(&[], &[("XTASK_MIRRORS", &env)]);
    run.assert_ok();
    assert!(
        run.stdout().contains("mirrors from XTASK_MIRRORS"),
        "{}",
        run.all()
    );
    assert_eq!(ws.head("notes"), up.c2);
    // Without the variable, the file's mirror is used (and names itself when it fails).
    let run = ws.sources(&[]);
    assert!(!run.ok());
    assert!(
        run.stderr()
            .contains("could not fetch the source from its mirror /nonexistent/notes"),
        "{}",
        run.all()
    );
    assert_eq!(ws.proxy.hits(), 0, "the remote was contacted");
}

#[test]
fn a_dirty_checkout_is_reported_and_never_overwritten() {
    let ws = Ws::new("sources-dirty");
    let up = ws.upstream("notes");
    ws.lib("notes", "notes", "v1");
    ws.mirror_file();
    ws.sources(&[]).assert_ok();

    let module = ws.checkout("notes").join("src/notes.py");
    std::fs::write(&module, "VERSION = 'mine'\n").unwrap();
    let run = ws.sources(&[]);
    run.assert_ok();
    let line = run.line("notes");
    assert!(line.contains(", dirty, at the pin,"), "{line}");
    assert!(line.contains("uncommitted changes are kept"), "{line}");
    assert!(run.stdout().contains("dirty: notes"), "{}", run.all());

    // The pin moves: a dirty checkout stays where it is, with the user's change.
    ws.lib("notes", "notes", "v2");
    let run = ws.sources(&[]);
    run.assert_ok();
    let line = run.line("notes");
    assert!(
        line.contains(", dirty, 0 ahead, 1 behind the pin,"),
        "{line}"
    );
    assert!(line.contains("NOT updated to the pin"), "{line}");
    assert!(line.contains("never overwritten"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&module).unwrap(),
        "VERSION = 'mine'\n"
    );
    assert_eq!(ws.head("notes"), up.c1);

    // Committed instead: HEAD carries the user's own commit, and is left there too.
    git_at(&ws.checkout("notes"), &["commit", "-qam", "mine"], 5);
    let mine = ws.head("notes");
    let run = ws.sources(&[]);
    run.assert_ok();
    let line = run.line("notes");
    assert!(
        line.contains(", clean, 1 ahead, 1 behind the pin,"),
        "{line}"
    );
    assert!(line.contains("NOT moved to the pin"), "{line}");
    assert_eq!(ws.head("notes"), mine);

    // Back at the earlier pin and clean: moved to the new pin.
    git(
        &ws.checkout("notes"),
        &["checkout", "-q", "--detach", &up.c1],
    );
    let run = ws.sources(&[]);
    run.assert_ok();
    let line = run.line("notes");
    assert!(
        line.contains("clean, at the pin, not fetched (mirror): updated to the pin"),
        "{line}"
    );
    assert_eq!(ws.head("notes"), up.c2);
    assert_eq!(ws.read("notes", "src/notes.py"), "VERSION = 2\n");
    // Files that running Python makes do not count as changes.
    std::fs::create_dir_all(ws.checkout("notes").join("src/__pycache__")).unwrap();
    std::fs::write(
        ws.checkout("notes")
            .join("src/__pycache__/notes.cpython-311.pyc"),
        "x",
    )
    .unwrap();
    let line = ws.sources(&[]).assert_ok().line("notes");
    assert!(line.contains(", clean, at the pin,"), "{line}");
    assert_eq!(ws.proxy.hits(), 0);
}

/// A directory `DIR/NAME` holding a `git` that runs `on_fetch` (shell) when its arguments
/// include `fetch`, and is the real git otherwise (or after `on_fetch`, if it returns).
fn wrapped_git(dir: &Path, name: &str, on_fetch: &str) -> PathBuf {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("git"))
        .find(|p| p.is_file())
        .expect("git on PATH");
    let bin = dir.join(name);
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = fetch ]; then {on_fetch}; fi\ndone\nexec '{}' \"$@\"\n",
        real.display()
    );
    let path = bin.join("git");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A `git` that stands still in `fetch` (writing its pid to `$MARK`).
fn stalling_git(dir: &Path) -> PathBuf {
    wrapped_git(dir, "bin", "echo $$ > \"$MARK\"; exec sleep 60")
}

/// A `git` that logs each `fetch` command line to `$LOG`.
fn logging_git(dir: &Path) -> PathBuf {
    wrapped_git(dir, "logbin", "echo \"$*\" >> \"$LOG\"")
}

#[test]
fn a_killed_run_leaves_nothing_the_next_run_cannot_repair() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let ws = Ws::new("sources-killed");
    let up = ws.upstream("notes");
    ws.lib("notes", "notes", "v1");
    ws.mirror_file();

    // Killed (SIGKILL, no chance to clean up) in the middle of the first fetch.
    let bin = stalling_git(ws._tmp.path());
    let mark = ws._tmp.path().join("fetching.pid");
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut child = ws
        .command(&[])
        .env("PATH", path)
        .env("MARK", &mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.exists() || std::fs::read_to_string(&mark).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the fetch never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let fetch: i32 = std::fs::read_to_string(&mark)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = kill(Pid::from_raw(fetch), Signal::SIGKILL);
    assert!(!ws.root.join(".xtask/git/notes.git").exists());
    assert_eq!(ws.leftovers().len(), 1, "{:?}", ws.leftovers());

    // A broken cache of another component (say, a copy cut short) is also found.
    ws.lib("other", "notes", "v2");
    std::fs::create_dir_all(ws.root.join(".xtask/git/other.git/objects")).unwrap();

    let run = ws.sources(&[]);
    run.assert_ok();
    assert_eq!(ws.leftovers(), Vec::<String>::new());
    assert_eq!(ws.head("notes"), up.c1);
    assert_eq!(ws.head("other"), up.c2);

    // A move to a new pin cut short (its marker in .git, the tree half written) is finished
    // by the next run instead of being taken for the user's changes.
    ws.lib("notes", "notes", "v2");
    let checkout = ws.checkout("notes");
    std::fs::write(checkout.join(".git/xtask-moving"), format!("{}\n", up.c2)).unwrap();
    std::fs::write(checkout.join("src/notes.py"), "VERSION = 2 half written").unwrap();
    std::fs::write(checkout.join(".git/index.lock"), "").unwrap();
    let run = ws.sources(&[]);
    run.assert_ok();
    assert!(
        run.line("notes").contains("updated to the pin"),
        "{}",
        run.all()
    );
    assert_eq!(ws.head("notes"), up.c2);
    assert_eq!(ws.read("notes", "src/notes.py"), "VERSION = 2\n");
    assert!(!checkout.join(".git/xtask-moving").exists());
    assert_eq!(git(&checkout, &["status", "--porcelain"]), "");
    assert_eq!(ws.proxy.hits(), 0);
}

#[test]
fn components_of_one_repository_ask_the_remote_once() {
    let ws = Ws::new("sources-shared");
    let up = ws.upstream("app");
    ws.upstream("other");
    // Two services built from one repository (a branch pin: fetched every run), and a third
    // component of another.
    ws.service("app-api", "app", "main");
    ws.service("app-web", "app", "main");
    ws.lib("other", "other", "v1");
    ws.mirror_file();
    let bin = logging_git(ws._tmp.path());
    let log = ws._tmp.path().join("fetches.log");
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let path = path.to_str().unwrap().to_string();
    let log_s = log.to_str().unwrap().to_string();
    let upstream = format!("{}/app", ws.mirrors.display());
    for round in 0..2 {
        let _ = std::fs::remove_file(&log);
        let run = ws.sources_env(&[], &[("PATH", &path), ("LOG", &log_s)]);
        run.assert_ok();
        let fetches = std::fs::read_to_string(&log).unwrap_or_default();
        let from_remote = fetches
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w.starts_with(&upstream)))
            .count();
        assert_eq!(
            from_remote, 1,
            "round {round}: the app remote once:\n{fetches}"
        );
        assert_eq!(ws.head("app-api"), up.c2, "{}", run.all());
        assert_eq!(ws.head("app-web"), up.c2, "{}", run.all());
    }
    assert_eq!(ws.proxy.hits(), 0);
}

#[test]
fn mirror_settings_with_errors_name_where_they_are() {
    let ws = Ws::new("sources-bad-mirrors");
    ws.upstream("notes");
    ws.lib("notes", "notes", "v1");
    std::fs::write(
        ws.root.join("mirrors.toml"),
        "[mirrors]\n\"https://git.invalid/org/\" = \"/srv/\"\nmirror = 1\n",
    )
    .unwrap();
    let run = ws.sources(&[]);
    assert_eq!(run.0.status.code(), Some(1), "{}", run.all());
    assert!(run.stderr().contains("mirrors.toml:3:"), "{}", run.all());

    std::fs::write(ws.root.join("mirrors.toml"), "[mirrorz]\n").unwrap();
    let run = ws.sources(&[]);
    assert!(
        run.stderr().contains("unknown key `mirrorz`"),
        "{}",
        run.all()
    );
    assert!(run.stderr().contains("mirrors.toml:1:"), "{}", run.all());

    let run = ws.sources_env(&[], &[("XTASK_MIRRORS", "https://git.invalid/org/")]);
    assert!(!run.ok());
    assert!(
        run.stderr()
            .contains("XTASK_MIRRORS: entry `https://git.invalid/org/` is not FROM=TO"),
        "{}",
        run.all()
    );

    let run = ws.sources(&["nope"]);
    assert!(!run.ok());
    assert!(
        run.stderr().contains("no service or library named `nope`"),
        "{}",
        run.all()
    );
    assert_eq!(ws.proxy.hits(), 0);
}

#[test]
fn help_tells_how_to_set_a_mirror() {
    let ws = Ws::new("sources-help");
    let out = ws.command(&["--help"]).output().unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("mirrors.toml") && help.contains("XTASK_MIRRORS"),
        "{help}"
    );
}
