//! `plan|up|down|status|logs HOST` end to end: the fixture ecosystem on the `local` host (this
//! machine's engine) and on `testbox`, an SSH host (tests/support/sshhost.rs) sharing this
//! machine's network namespace, so the ports `up` publishes are on its loopback as on a real
//! host.
//!
//! Every test needs Docker (their names say so). They run one at a time (a static mutex): they
//! publish the fixed host port 18080 and use host-qualified container names. Each works in a
//! fresh copy of the fixture made into a git repository, with its own MCP client config, and
//! removes every container, network and volume of its host (label `xtask.host=HOST`) when it
//! ends, failed or not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::sshhost::{Options, SshHost};
use tests::{copy_tree, fixtures, repo_root, text, xtask_bin, TempDir};

/// The port notes-api publishes on the host (services/notes-api/service.toml).
const API_PORT: u16 = 18080;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker (these tests need Docker)")
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args([
            "-c",
            "user.name=xtask test",
            "-c",
            "user.email=test@xtask.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Removes what a host's deployment made on the engine, whatever state a test left it in.
struct Cleanup(Vec<String>);

impl Cleanup {
    fn run(&self) {
        for host in &self.0 {
            let filter = format!("label=xtask.host={host}");
            let ids = text(&docker(&["ps", "-aq", "--filter", &filter]).stdout);
            for id in ids.split_whitespace() {
                docker(&["rm", "-f", id]);
            }
            let nets = text(&docker(&["network", "ls", "-q", "--filter", &filter]).stdout);
            for id in nets.split_whitespace() {
                docker(&["network", "rm", id]);
            }
            let vols = text(&docker(&["volume", "ls", "-q", "--filter", &filter]).stdout);
            for id in vols.split_whitespace() {
                docker(&["volume", "rm", "-f", id]);
            }
        }
    }
}

/// A fresh workspace: the fixture committed to a new repository with the project's
/// .gitignore, a venv for the MCP server, and an MCP client config of its own.
struct Ws {
    root: PathBuf,
    mcp: PathBuf,
    envs: Vec<(String, String)>,
    /// The hosts whose containers, networks and volumes go when the test ends.
    cleanup: Cleanup,
    /// The workspace's commit: images built from it are tagged `REV` or `REV-dirty.HASH`.
    rev: String,
    _dir: TempDir,
}

impl Ws {
    fn new(tag: &str, hosts: &[&str]) -> Ws {
        let cleanup = Cleanup(hosts.iter().map(|h| h.to_string()).collect());
        let dir = TempDir::new(&format!("hosts-{tag}"));
        let root = dir.path().join("eco");
        copy_tree(&fixtures().join("eco"), &root);
        std::fs::copy(repo_root().join(".gitignore"), root.join(".gitignore")).unwrap();
        assert!(git(&root, &["init", "-q"]).status.success());
        assert!(git(&root, &["add", "-A"]).status.success());
        assert!(git(&root, &["commit", "-qm", "fixture"]).status.success());
        let rev = text(&git(&root, &["rev-parse", "--short=12", "HEAD"]).stdout)
            .trim()
            .to_string();
        // The MCP server runs with the venv's python: a real venv, without pip (nothing to
        // install for the fixture server, which uses the standard library only).
        let venv = Command::new("python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(root.join(".venv"))
            .output()
            .expect("python3");
        assert!(venv.status.success(), "{}", text(&venv.stderr));
        let mcp = dir.path().join("claude_desktop_config.json");
        let envs = vec![(
            "XTASK_MCP_CLIENT_CONFIG".to_string(),
            mcp.display().to_string(),
        )];
        Ws {
            root,
            mcp,
            envs,
            cleanup,
            rev,
            _dir: dir,
        }
    }

    /// The workspace reaches `host` as `testbox`.
    fn with_ssh(mut self, host: &SshHost) -> Ws {
        self.edit("hosts/testbox.toml", "deploy@127.0.0.1:2222", &host.spec());
        self.envs.extend(host.envs());
        self
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(xtask_bin());
        cmd.arg("--workspace")
            .arg(&self.root)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run xtask")
    }

    /// Runs and expects success; returns stdout + stderr.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "xtask {args:?} failed ({}):\n{}",
            out.status,
            both(&out)
        );
        both(&out)
    }

    /// `plan HOST`'s exit code.
    fn plan(&self, host: &str) -> i32 {
        let out = self.run(&["plan", host]);
        let code = out.status.code().unwrap_or(-1);
        assert!(code == 0 || code == 2, "plan {host}: {}", both(&out));
        code
    }

    fn spawn(&self, args: &[&str]) -> Running {
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run xtask");
        Running(Some(child))
    }

    /// Replaces exactly one occurrence of `from` in the workspace file `rel`.
    fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.root.join(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "`{from}` in {rel}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    fn lock(&self, host: &str) -> PathBuf {
        self.root
            .join(".xtask/hosts")
            .join(host)
            .join(".xtask-lock")
    }
}

impl Drop for Ws {
    /// The deployment first, then the image tags `up` made from this workspace's commit (the
    /// images stay while other tags name them, as the fixture's usually do).
    fn drop(&mut self) {
        self.cleanup.run();
        let out = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        for tag in text(&out.stdout).lines() {
            let Some((repo, t)) = tag.rsplit_once(':') else {
                continue;
            };
            if repo.starts_with("xtask/") && !self.rev.is_empty() && t.starts_with(&self.rev) {
                docker(&["image", "rm", tag]);
            }
        }
    }
}

fn both(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A child xtask, killed if a test ends while it runs.
struct Running(Option<Child>);

impl Running {
    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
    fn kill(&mut self) {
        let mut c = self.0.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
    fn finish(&mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Container id by name, `None` when there is no such container.
fn id_of(name: &str) -> Option<String> {
    let out = docker(&["inspect", "--format", "{{.Id}}", name]);
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_string())
}

fn inspect(name: &str, format: &str) -> String {
    let out = docker(&["inspect", "--format", format, name]);
    assert!(
        out.status.success(),
        "inspect {name}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// Names of the containers of `host`, sorted.
fn containers_of(host: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=xtask.host={host}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut v: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    v.sort();
    v
}

fn labelled(kind: &str, host: &str) -> Vec<String> {
    let out = docker(&[
        kind,
        "ls",
        "-q",
        "--filter",
        &format!("label=xtask.host={host}"),
    ]);
    text(&out.stdout).lines().map(str::to_string).collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.0 request to 127.0.0.1:`port`: (status, JSON body).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    let json = serde_json::from_str(body).map_err(|e| format!("{e}: {body:?}"))?;
    Ok((status, json))
}

/// notes-api's /health through the published port: `Ok(env)` when healthy.
fn api_health() -> Result<String, String> {
    match http(API_PORT, "GET", "/health", None)? {
        (200, v) if v["status"] == "ok" && v["database"] == "ok" => {
            Ok(v["env"].as_str().unwrap_or_default().to_string())
        }
        other => Err(format!("{other:?}")),
    }
}

fn plan_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("no plan line for {name}:\n{out}"))
}

fn assert_changes(out: &str, n: usize) {
    let want = format!("{n} change{}", if n == 1 { "" } else { "s" });
    assert!(out.lines().any(|l| l == want), "want `{want}`:\n{out}");
}

#[test]
fn local_docker_up_again_is_a_no_op_and_a_changed_env_replaces_only_its_service() {
    let _serial = serial();
    let ws = Ws::new("local", &["local"]);

    let out = ws.ok(&["up", "local"]);
    assert!(
        out.contains("started xtask-local-notes-db (healthy)"),
        "{out}"
    );
    assert!(
        out.contains("started xtask-local-notes-api (healthy)"),
        "{out}"
    );
    assert_eq!(
        containers_of("local"),
        ["xtask-local-notes-api", "xtask-local-notes-db"]
    );
    assert_eq!(api_health().unwrap(), "smoke");
    let db = id_of("xtask-local-notes-db").unwrap();
    let api = id_of("xtask-local-notes-api").unwrap();

    // Again: nothing to do, nothing touched.
    let out = ws.ok(&["up", "local"]);
    assert_changes(&out, 0);
    assert_eq!(id_of("xtask-local-notes-db").unwrap(), db);
    assert_eq!(id_of("xtask-local-notes-api").unwrap(), api);
    assert_eq!(ws.plan("local"), 0);

    // One env value changes: the plan names that container and why, and `up` replaces
    // exactly it.
    ws.edit(
        "services/notes-api/service.toml",
        "APP_ENV = \"smoke\"",
        "APP_ENV = \"changed\"",
    );
    assert_eq!(ws.plan("local"), 2);
    let out = both(&ws.run(&["plan", "local"]));
    assert!(
        plan_line(&out, "xtask-local-notes-api").contains("replace"),
        "{out}"
    );
    assert!(
        plan_line(&out, "xtask-local-notes-api").contains("(env changed)"),
        "{out}"
    );
    assert!(
        plan_line(&out, "xtask-local-notes-db").contains("unchanged"),
        "{out}"
    );
    let out = ws.ok(&["up", "local"]);
    assert_changes(&out, 2); // the env file and the container
    assert!(
        out.contains("replaced xtask-local-notes-api (healthy"),
        "{out}"
    );
    assert!(!out.contains("replacing xtask-local-notes-db"), "{out}");
    assert_eq!(id_of("xtask-local-notes-db").unwrap(), db, "db untouched");
    let api2 = id_of("xtask-local-notes-api").unwrap();
    assert_ne!(api2, api, "api replaced");
    assert_eq!(api_health().unwrap(), "changed");
    let printenv = docker(&["exec", "xtask-local-notes-api", "printenv", "APP_ENV"]);
    assert_eq!(text(&printenv.stdout), "changed\n");
    assert_eq!(
        containers_of("local"),
        ["xtask-local-notes-api", "xtask-local-notes-db"],
        "no -next/-prev left"
    );
    assert_eq!(ws.plan("local"), 0);

    // status and logs.
    let out = ws.ok(&["status", "local"]);
    for svc in ["notes-db", "notes-api"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{svc} ")))
            .unwrap_or_else(|| panic!("{svc} in status:\n{out}"));
        assert!(line.contains("running"), "{line}");
        assert!(line.contains("healthy"), "{line}");
    }
    let out = ws.ok(&["logs", "local", "notes-api"]);
    assert!(
        out.contains("listening on 0.0.0.0:8080 (env=changed)"),
        "{out}"
    );
    assert!(out.contains("GET /health 200"), "{out}");
    let out = ws.run(&["logs", "local", "notes-worker"]);
    assert!(!out.status.success());

    // down: containers and network go, volumes stay unless asked.
    let out = ws.ok(&["down", "local"]);
    assert!(out.contains("kept 1 volume(s)"), "{out}");
    assert!(containers_of("local").is_empty());
    assert!(labelled("network", "local").is_empty());
    assert_eq!(labelled("volume", "local"), ["xtask-local-notes-db-data"]);
    assert!(!ws.root.join(".xtask/hosts/local/notes-api/.env").exists());
    assert_eq!(ws.plan("local"), 2);
    ws.ok(&["down", "local", "--volumes"]);
    assert!(labelled("volume", "local").is_empty());
}

#[test]
fn local_docker_mcp_entries_merge_into_the_client_config_and_leave_with_down() {
    let _serial = serial();
    let ws = Ws::new("mcp", &["local"]);
    let original = "{\n  \"globalShortcut\": \"Ctrl+Space\",\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"/usr/bin/other\",\n      \"args\": [\"--x\"]\n    }\n  },\n  \"theme\": \"dark\"\n}\n";
    std::fs::write(&ws.mcp, original).unwrap();

    ws.ok(&["up", "local"]);
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&ws.mcp).unwrap()).unwrap();
    let before: Value = serde_json::from_str(original).unwrap();
    assert_eq!(after["theme"], "dark");
    assert_eq!(after["globalShortcut"], "Ctrl+Space");
    assert_eq!(after["mcpServers"]["other"], before["mcpServers"]["other"]);
    let entry = &after["mcpServers"]["notes-mcp"];
    assert_eq!(
        entry["command"],
        ws.root.join(".venv/bin/python").display().to_string()
    );
    assert_eq!(
        entry["args"][0],
        ws.root
            .join("components/notes-mcp/server.py")
            .display()
            .to_string()
    );
    assert_eq!(after.as_object().unwrap().len(), 3);
    assert_eq!(after["mcpServers"].as_object().unwrap().len(), 2);
    let backup = ws
        .mcp
        .with_file_name("claude_desktop_config.json.xtask-backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    // Another user change to the file survives the next `up`, which has nothing to do there.
    let out = ws.ok(&["up", "local"]);
    assert_changes(&out, 0);

    let out = ws.ok(&["down", "local", "--volumes"]);
    assert!(out.contains("removed notes-mcp from"), "{out}");
    let left: Value = serde_json::from_str(&std::fs::read_to_string(&ws.mcp).unwrap()).unwrap();
    assert_eq!(left, before, "exactly its entry went");
    // Keys keep their order.
    let text_left = std::fs::read_to_string(&ws.mcp).unwrap();
    let pos = |k: &str| text_left.find(k).unwrap();
    assert!(pos("globalShortcut") < pos("mcpServers") && pos("mcpServers") < pos("theme"));
}

#[test]
fn local_docker_concurrent_ups_wait_or_fail_with_no_wait() {
    let _serial = serial();
    let ws = Ws::new("concurrent", &["local"]);
    let lock = ws.lock("local");

    let mut first = ws.spawn(&["up", "local"]);
    wait_for("the first up to take the lock", || {
        lock.symlink_metadata().is_ok()
    });
    let owner = std::fs::read_link(&lock).unwrap();
    assert!(
        owner
            .to_string_lossy()
            .ends_with(&format!(":{}", first.pid())),
        "{owner:?}"
    );
    // The first is now creating the database and waiting for it: a second with --no-wait
    // fails at once, naming the holder; one without waits for it.
    let out = ws.run(&["up", "local", "--no-wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("another `up` or `down` holds the lock"),
        "{err}"
    );
    assert!(err.contains(&format!(":{}", first.pid())), "{err}");
    let mut second = ws.spawn(&["up", "local"]);
    let first = first.finish();
    assert!(first.status.success(), "{}", both(&first));
    let second = second.finish();
    assert!(second.status.success(), "{}", both(&second));
    let second = both(&second);
    assert!(second.contains("waiting for the lock held by"), "{second}");
    assert_changes(&second, 0);

    assert_eq!(ws.plan("local"), 0);
    assert_eq!(
        containers_of("local"),
        ["xtask-local-notes-api", "xtask-local-notes-db"]
    );
    assert!(lock.symlink_metadata().is_err(), "lock released");
    api_health().unwrap();
}

#[test]
fn local_docker_sigkill_during_a_replace_then_up_converges() {
    let _serial = serial();
    let ws = Ws::new("sigkill", &["local"]);
    ws.ok(&["up", "local"]);
    let (code, note) = http(API_PORT, "POST", "/notes", Some(r#"{"body": "kept"}"#)).unwrap();
    assert_eq!(code, 201, "{note}");
    let api = id_of("xtask-local-notes-api").unwrap();

    // 1. Killed while the new version of a stateless service is checked beside the old one
    //    (it never gets healthy: it listens on another port).
    ws.edit(
        "services/notes-api/service.toml",
        "PORT = \"8080\"",
        "PORT = \"9999\"",
    );
    let mut up = ws.spawn(&["up", "local"]);
    wait_for("notes-api-next", || {
        id_of("xtask-local-notes-api-next").is_some()
    });
    up.kill();
    assert_eq!(id_of("xtask-local-notes-api").unwrap(), api);
    assert_eq!(api_health().unwrap(), "smoke", "the old version serves on");

    // 2. Killed while the database's new version waits for its health check, the old one
    //    stopped aside (a service with a volume is switched, not run beside).
    ws.edit(
        "services/notes-api/service.toml",
        "PORT = \"9999\"",
        "PORT = \"8080\"",
    );
    ws.edit(
        "services/notes-db/service.toml",
        "POSTGRES_DB = \"notes\"",
        "POSTGRES_DB = \"notes\"\nEXTRA = \"1\"",
    );
    ws.edit(
        "services/notes-db/service.toml",
        "command = [\"pg_isready\", \"-h\", \"127.0.0.1\", \"-U\", \"notes\", \"-d\", \"notes\"]",
        "command = [\"false\"]",
    );
    let mut up = ws.spawn(&["up", "local"]);
    wait_for("notes-db-prev and notes-db-next", || {
        id_of("xtask-local-notes-db-prev").is_some() && id_of("xtask-local-notes-db-next").is_some()
    });
    up.kill();
    assert!(id_of("xtask-local-notes-db").is_none());
    assert!(
        ws.lock("local").symlink_metadata().is_ok(),
        "the killed run left its lock"
    );

    // Again, with a health check that can pass: the leftovers are repaired, the stale lock
    // broken, the replace done.
    ws.edit(
        "services/notes-db/service.toml",
        "command = [\"false\"]",
        "command = [\"pg_isready\", \"-h\", \"127.0.0.1\", \"-U\", \"notes\", \"-d\", \"notes\"]",
    );
    let out = ws.ok(&["up", "local"]);
    assert!(
        out.contains("breaking the lock of a run that is gone"),
        "{out}"
    );
    assert!(
        out.contains("restoring xtask-local-notes-db from an interrupted replace"),
        "{out}"
    );
    assert!(out.contains("removing xtask-local-notes-db-next"), "{out}");
    assert!(
        out.contains("replaced xtask-local-notes-db (healthy"),
        "{out}"
    );
    assert_eq!(ws.plan("local"), 0);
    assert_eq!(
        containers_of("local"),
        ["xtask-local-notes-api", "xtask-local-notes-db"]
    );
    let printenv = docker(&["exec", "xtask-local-notes-db", "printenv", "EXTRA"]);
    assert_eq!(text(&printenv.stdout), "1\n");
    api_health().unwrap();
    let id = note["id"].as_i64().unwrap();
    let (code, got) = http(API_PORT, "GET", &format!("/notes/{id}"), None).unwrap();
    assert_eq!(
        (code, &got["body"]),
        (200, &Value::from("kept")),
        "data kept"
    );
}

#[test]
fn local_docker_rollback_returns_a_replaced_service_to_its_previous_image() {
    let _serial = serial();
    let ws = Ws::new("rollback", &["local"]);
    ws.ok(&["up", "local"]);
    let first_image = inspect("xtask-local-notes-api", "{{.Image}}");
    let db = id_of("xtask-local-notes-db").unwrap();

    // A new version of the code: a new image.
    let app = ws.root.join("components/notes-api/app.py");
    let mut code = std::fs::read_to_string(&app).unwrap();
    code.push_str("\n# a change that makes a new image for the rollback test\n");
    std::fs::write(&app, code).unwrap();
    let out = ws.ok(&["up", "local"]);
    assert!(out.contains("(image changed)"), "{out}");
    let second_image = inspect("xtask-local-notes-api", "{{.Image}}");
    assert_ne!(second_image, first_image);
    assert_eq!(
        inspect(
            "xtask-local-notes-api",
            "{{index .Config.Labels \"xtask.previous-image\"}}"
        ),
        first_image
    );

    let out = ws.ok(&["up", "local", "--rollback"]);
    assert!(
        out.contains("xtask-local-notes-db: no previous image to roll back to"),
        "{out}"
    );
    assert!(
        out.contains("replaced xtask-local-notes-api (healthy"),
        "{out}"
    );
    assert_eq!(inspect("xtask-local-notes-api", "{{.Image}}"), first_image);
    assert_eq!(id_of("xtask-local-notes-db").unwrap(), db);
    api_health().unwrap();
    // The descriptors still say the new code: plan shows the way forward again.
    assert_eq!(ws.plan("local"), 2);
}

fn ssh_host() -> SshHost {
    SshHost::start_with(Options {
        host_network: true,
        ..Options::default()
    })
}

fn cat_on(host: &SshHost, path: &str) -> Option<Vec<u8>> {
    let out = host.exec_as("root", &["cat", path]);
    out.status.success().then_some(out.stdout)
}

fn exists_on(host: &SshHost, path: &str) -> bool {
    host.exec_as("root", &["test", "-e", path]).status.success()
}

#[test]
fn ssh_docker_up_makes_files_integrations_and_healthy_services_on_the_host() {
    let _serial = serial();
    let host = ssh_host();
    let ws = Ws::new("ssh", &["testbox"]).with_ssh(&host);
    let root = "/srv/services";

    let out = ws.ok(&["up", "testbox"]);
    assert!(
        out.contains("started xtask-testbox-notes-db (healthy)"),
        "{out}"
    );
    assert!(
        out.contains("started xtask-testbox-notes-api (healthy)"),
        "{out}"
    );

    // The env files: private, the deploy user's, the rendered environment.
    for svc in ["notes-db", "notes-api"] {
        let path = format!("{root}/{svc}/.env");
        let stat = host.exec_as("root", &["stat", "-c", "%a %U", &path]);
        assert_eq!(text(&stat.stdout).trim(), "600 deploy", "{path}");
    }
    let env = text(&cat_on(&host, &format!("{root}/notes-api/.env")).unwrap());
    assert!(env.lines().any(|l| l == "APP_ENV=smoke"), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("DATABASE_URL=postgresql://notes:")),
        "{env}"
    );
    // The secret reaches the container through the file, and is in neither its labels nor
    // what `up` printed.
    let secret = env
        .lines()
        .find_map(|l| l.strip_prefix("API_SECRET="))
        .unwrap()
        .to_string();
    assert_eq!(secret.len(), 64, "hex32");
    let labels = inspect("xtask-testbox-notes-api", "{{json .Config.Labels}}");
    assert!(!labels.contains(&secret));
    assert!(!out.contains(&secret));
    let printenv = docker(&["exec", "xtask-testbox-notes-api", "printenv", "API_SECRET"]);
    assert_eq!(text(&printenv.stdout).trim(), secret);

    // The integrations are rendered under the root; on this host `up` is not root and there
    // is no nginx, so they are not applied to /etc, and `up` says so.
    let site = text(&cat_on(&host, &format!("{root}/rendered/nginx-xtask-testbox.conf")).unwrap());
    assert!(site.contains("listen 8081;"), "{site}");
    assert!(site.contains("server_name testbox;"), "{site}");
    assert!(site.contains(&format!("127.0.0.1:{API_PORT}")), "{site}");
    let cron = text(&cat_on(&host, &format!("{root}/rendered/cron-xtask-testbox")).unwrap());
    for name in ["backup-notes", "prune-notes", "health-notes-api"] {
        assert!(cron.contains(&format!("# {name}:")), "{cron}");
    }
    assert!(cron.contains("0 2 * * * root "), "{cron}");
    assert!(exists_on(&host, &format!("{root}/bin/health-notes-api.sh")));
    for what in ["nginx site", "cron entries", "firewall rules"] {
        assert!(
            out.contains(&format!("{what} rendered at {root}/rendered/")),
            "{what}: {out}"
        );
    }
    assert!(out.contains("not applied"), "{out}");
    assert!(!exists_on(&host, "/etc/nginx/conf.d/xtask-testbox.conf"));
    assert!(!exists_on(&host, "/etc/cron.d/xtask-testbox"));

    // The services answer: the API (its health route queries the database) through the
    // port published on the host, the database by its own check, run there.
    assert_eq!(api_health().unwrap(), "smoke");
    let ready = host.exec_as(
        "deploy",
        &[
            "docker",
            "exec",
            "xtask-testbox-notes-db",
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            "notes",
        ],
    );
    assert!(ready.status.success(), "{}", both(&ready));
    let out = ws.ok(&["status", "testbox"]);
    assert_eq!(
        out.lines().filter(|l| l.contains(" healthy ")).count(),
        2,
        "{out}"
    );
    let out = ws.ok(&["logs", "testbox", "notes-api", "--tail", "50"]);
    assert!(
        out.contains("listening on 0.0.0.0:8080 (env=smoke)"),
        "{out}"
    );

    // Converged: nothing to do.
    let out = ws.ok(&["up", "testbox"]);
    assert_changes(&out, 0);
    assert_eq!(ws.plan("testbox"), 0);
    assert!(!exists_on(&host, &format!("{root}/.xtask-lock")));

    // down takes away what up made on the host.
    ws.ok(&["down", "testbox", "--volumes"]);
    assert!(containers_of("testbox").is_empty());
    assert!(labelled("network", "testbox").is_empty());
    assert!(labelled("volume", "testbox").is_empty());
    let left = host.exec_as("root", &["find", root, "-mindepth", "1"]);
    assert_eq!(text(&left.stdout), "", "left on the host");
}

#[test]
fn ssh_docker_failed_health_keeps_the_old_version_answering() {
    let _serial = serial();
    let host = ssh_host();
    let ws = Ws::new("ssh-health", &["testbox"]).with_ssh(&host);
    ws.ok(&["up", "testbox"]);
    let api = id_of("xtask-testbox-notes-api").unwrap();

    // The new version listens on another port than the one its health check asks.
    ws.edit(
        "services/notes-api/service.toml",
        "PORT = \"8080\"",
        "PORT = \"9999\"",
    );
    ws.edit(
        "services/notes-api/service.toml",
        "deadline_secs = 60",
        "deadline_secs = 5",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match api_health() {
                    Ok(env) if env == "smoke" => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        })
    };
    let out = ws.run(&["up", "testbox"]);
    // And after.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = poller.join().unwrap();
    let all = both(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("the new version of `notes-api` is not healthy"),
        "{all}"
    );
    assert!(all.contains("the old one keeps serving"), "{all}");
    assert!(
        all.contains("--- last log lines of the new version ---"),
        "{all}"
    );
    assert!(all.contains("listening on 0.0.0.0:9999"), "{all}");
    assert!(
        failed.is_empty(),
        "the old version stopped answering: {failed:?}"
    );
    assert!(ok > 0);
    assert_eq!(id_of("xtask-testbox-notes-api").unwrap(), api);
    assert_eq!(
        containers_of("testbox"),
        ["xtask-testbox-notes-api", "xtask-testbox-notes-db"]
    );
    assert_eq!(ws.plan("testbox"), 2, "still to do");
}

/// TOML basic string of `s`.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn ssh_docker_shell_metacharacters_reach_the_host_verbatim_and_run_nothing() {
    let _serial = serial();
    let host = ssh_host();
    let ws = Ws::new("ssh-hostile", &["testbox"]).with_ssh(&host);
    assert!(host.exec_as("root", &["touch", "/tmp/y"]).status.success());
    let root = "/srv/services/it's $(touch /tmp/x); rm -rf /tmp/y \"q\" `touch /tmp/x` & | > * ~ #";
    let value = " $(touch /tmp/x); rm -rf /tmp/y 'single' \"double\" `touch /tmp/x` $HOME \\ # = %s & | ; tail ";
    ws.edit(
        "hosts/testbox.toml",
        "root = \"/srv/services\"",
        &format!("root = {}", toml_str(root)),
    );
    ws.edit(
        "services/notes-api/service.toml",
        "APP_ENV = \"smoke\"",
        &format!("APP_ENV = \"smoke\"\nHOSTILE = {}", toml_str(value)),
    );

    ws.ok(&["up", "testbox"]);
    let env = cat_on(&host, &format!("{root}/notes-api/.env")).expect("env file at the odd root");
    let env = text(&env);
    assert!(
        env.lines().any(|l| l == format!("HOSTILE={value}")),
        "{env}"
    );
    let printenv = docker(&["exec", "xtask-testbox-notes-api", "printenv", "HOSTILE"]);
    assert_eq!(text(&printenv.stdout), format!("{value}\n"));
    assert!(exists_on(
        &host,
        &format!("{root}/rendered/cron-xtask-testbox")
    ));
    assert_eq!(ws.plan("testbox"), 0);
    assert!(!exists_on(&host, "/tmp/x"), "something ran on the host");
    assert!(exists_on(&host, "/tmp/y"), "something ran on the host");
    let in_container = docker(&["exec", "xtask-testbox-notes-api", "test", "-e", "/tmp/x"]);
    assert!(
        !in_container.status.success(),
        "something ran in the container"
    );

    // A line break cannot be carried by an env file: refused when the descriptors are read,
    // naming the file, line and variable, and nothing changes on the host.
    let api = id_of("xtask-testbox-notes-api").unwrap();
    ws.edit(
        "services/notes-api/service.toml",
        &format!("HOSTILE = {}", toml_str(value)),
        &format!("HOSTILE = {}", toml_str("one\ntwo")),
    );
    for cmd in ["plan", "up"] {
        let out = ws.run(&[cmd, "testbox"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", both(&out));
        let err = text(&out.stderr);
        assert!(
            err.contains("the value of `HOSTILE` contains a line break or NUL"),
            "{cmd}: {err}"
        );
        assert!(
            err.contains("--> services/notes-api/service.toml:18:11 (key `run.env.HOSTILE`)"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(id_of("xtask-testbox-notes-api").unwrap(), api);
    assert_eq!(
        text(&cat_on(&host, &format!("{root}/notes-api/.env")).unwrap()),
        env
    );

    // Nor can a root directory hold one.
    ws.edit(
        "services/notes-api/service.toml",
        &format!("HOSTILE = {}", toml_str("one\ntwo")),
        &format!("HOSTILE = {}", toml_str(value)),
    );
    ws.edit(
        "hosts/testbox.toml",
        &format!("root = {}", toml_str(root)),
        &format!("root = {}", toml_str("/srv/services/a\nb")),
    );
    let out = ws.run(&["plan", "testbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        both(&out).contains("invalid root directory"),
        "{}",
        both(&out)
    );
    assert!(!exists_on(&host, "/tmp/x"));
}
