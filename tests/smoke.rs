//! `smoke` against a real Docker engine: a passing run with its JUnit report, failures that
//! name the check and show the service's logs, the health deadline (also against a server that
//! accepts and never answers), a TCP check that is not fooled by Docker's port proxy, and
//! teardown after success, failure, SIGINT (to xtask alone, and to the whole job during
//! teardown, as a terminal's Ctrl-C), two runs at once and (through the next run's sweep)
//! SIGKILL.
//!
//! Every test works in its own temporary copy of the fixture. The tests of this binary run one
//! at a time (`engine::serial`): they would only slow each other down on a small machine, and a
//! run's sweep must not meet another test's deliberately killed run half way.

mod engine;

use std::path::Path;
use std::time::{Duration, Instant};

use engine::{eco_copy, edit_once, image_lines, run_id_of, run_objects, Images, RunGuard, Running};
use nix::sys::signal::{kill, killpg, Signal};
use tests::{text, xtask};

/// Generous: a cold engine builds every image (base images included) inside a run.
const COLD: Duration = Duration::from_secs(900);

/// The run id announced on stderr.
fn run_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(run_id_of)
        .unwrap_or_else(|| panic!("no `smoke run ID` line:\n{stderr}"))
}

fn pass_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("PASS ")).collect()
}

/// `(passed, failed)` from the stdout summary `N passed, M failed`.
fn counts(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" passed, "))
        .unwrap_or_else(|| panic!("no summary in stdout: {stdout:?}"));
    let (p, rest) = line.split_once(" passed, ").unwrap();
    let f = rest
        .strip_suffix(" failed")
        .unwrap_or_else(|| panic!("bad summary {line:?}"));
    (p.parse().unwrap(), f.parse().unwrap())
}

/// Nothing of run `id` is left in the engine, nor its directory of env files (secrets).
fn assert_left_nothing(id: &str, output: &str) {
    let left = run_objects(id);
    assert!(left.is_empty(), "run {id} left behind: {left:?}\n{output}");
    let dir = std::env::temp_dir().join(format!("xtask-{id}"));
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// Adds the references of images this run built (content made up by a test) to `made`.
fn note_built(stderr: &str, made: &mut Images) {
    for (_, what, reference) in image_lines(stderr) {
        if what == "built" {
            made.0.push(reference);
        }
    }
}

fn smoke(ws: &Path, args: &[&str], guard: &mut RunGuard) -> (Option<i32>, String, String) {
    let mut argv = vec!["smoke"];
    argv.extend_from_slice(args);
    let out = xtask(ws, &argv);
    let stderr = text(&out.stderr);
    if let Some(id) = stderr.lines().find_map(run_id_of) {
        guard.0.push(id);
    }
    (out.status.code(), text(&out.stdout), stderr)
}

#[test]
fn docker_smoke_passes_on_the_fixture_with_junit() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-pass");
    let junit = ws.path().join("report.xml");
    let mut guard = RunGuard::default();
    let (code, stdout, stderr) =
        smoke(ws.path(), &["--junit", junit.to_str().unwrap()], &mut guard);
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(0), "{all}");
    let id = run_id(&stderr);

    let passes = pass_lines(&stderr);
    assert!(!stderr.lines().any(|l| l.starts_with("FAIL ")), "{all}");
    assert_eq!(counts(&stdout), (passes.len(), 0), "{all}");
    for want in [
        "PASS notes-db/health ",
        "PASS notes-api/health ",
        // The PostgreSQL round trip: written through the API, read back through it.
        "PASS notes-api/create-note ",
        "PASS notes-api/read-note ",
        "PASS notes-mcp/",
    ] {
        assert!(
            passes.iter().any(|l| l.starts_with(want)),
            "no `{want}` line:\n{all}"
        );
    }

    let xml = std::fs::read_to_string(&junit).expect("the --junit file was written");
    let doc = roxmltree::Document::parse(&xml)
        .unwrap_or_else(|e| panic!("JUnit report is not XML: {e}\n{xml}"));
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), passes.len(), "{xml}\n{all}");
    assert!(
        !doc.descendants()
            .any(|n| n.has_tag_name("failure") || n.has_tag_name("error")),
        "{xml}"
    );
    for case in &cases {
        let line = format!(
            "PASS {}/{} (",
            case.attribute("classname").unwrap_or("?"),
            case.attribute("name").unwrap_or("?")
        );
        assert!(
            passes.iter().any(|l| l.starts_with(&line)),
            "testcase without a PASS line: {line}\n{all}"
        );
    }
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    assert_eq!(
        suite.attribute("tests"),
        Some(cases.len().to_string().as_str())
    );
    assert_eq!(suite.attribute("failures"), Some("0"));
    assert!(suite.attribute("name").unwrap_or("").contains(&id), "{xml}");

    assert_left_nothing(&id, &all);
}

#[test]
fn docker_smoke_fails_on_wrong_json_naming_the_check_and_showing_logs() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-json");
    // GET /notes/<id> answers the stored body with something appended; POST is unchanged, so
    // the note is still written and read back from PostgreSQL.
    edit_once(
        &ws.path().join("components/notes-api/app.py"),
        r#"return self.send_json(200, {"id": rows[0][0], "body": rows[0][1]})"#,
        r#"return self.send_json(200, {"id": rows[0][0], "body": rows[0][1] + " (altered)"})"#,
    );
    let mut made = Images::default();
    let mut guard = RunGuard::default();
    let (code, stdout, stderr) = smoke(ws.path(), &["notes-api"], &mut guard);
    note_built(&stderr, &mut made);
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(1), "{all}");
    let id = run_id(&stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("PASS notes-api/create-note ")),
        "{all}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let fail = lines
        .iter()
        .position(|l| l.starts_with("FAIL notes-api/read-note "))
        .unwrap_or_else(|| panic!("no `FAIL notes-api/read-note` line:\n{all}"));
    // The failure says what differed: the field, what came and what was expected.
    let detail = lines[fail..].join("\n");
    assert!(detail.contains("field `body`"), "{all}");
    assert!(detail.contains("hello from smoke (altered)"), "{all}");
    // Then the service's own log: the request lines of the calls the checks made.
    let marker = lines[fail..]
        .iter()
        .position(|l| l.contains("--- last log lines of notes-api ---"))
        .map(|i| i + fail)
        .unwrap_or_else(|| panic!("no log marker after the FAIL line:\n{all}"));
    let log: Vec<&str> = lines[marker + 1..]
        .iter()
        .take_while(|l| l.starts_with("     "))
        .map(|l| l.trim())
        .collect();
    assert!(
        log.contains(&"POST /notes 201"),
        "log lines: {log:?}\n{all}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /notes/") && l.ends_with(" 200")),
        "log lines: {log:?}\n{all}"
    );
    let (_, failed) = counts(&stdout);
    assert_eq!(failed, 1, "{all}");
    assert_left_nothing(&id, &all);
}

#[test]
fn docker_smoke_fails_at_the_health_deadline() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-deadline");
    let descriptor = ws.path().join("services/notes-api/service.toml");
    edit_once(
        &descriptor,
        "[run]\n",
        "[run]\ncommand = [\"sleep\", \"infinity\"]\n",
    );
    edit_once(
        &descriptor,
        "[health]\ndeadline_secs = 60\n",
        "[health]\ndeadline_secs = 5\n",
    );
    let mut guard = RunGuard::default();
    let (code, stdout, stderr) = smoke(ws.path(), &["notes-api"], &mut guard);
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(1), "{all}");
    let id = run_id(&stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("PASS notes-db/health ")),
        "{all}"
    );
    let fail = stderr
        .lines()
        .find(|l| l.starts_with("FAIL notes-api/health ("))
        .unwrap_or_else(|| panic!("no `FAIL notes-api/health` line:\n{all}"));
    let secs: f64 = fail["FAIL notes-api/health (".len()..]
        .split_once("s)")
        .and_then(|(s, _)| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in {fail:?}"));
    assert!(
        (5.0..=8.0).contains(&secs),
        "health gave up after {secs}s with a 5 s deadline: {fail}"
    );
    assert!(fail.contains("not healthy after 5 s"), "{fail}");
    // Nothing of a service that never came up is checked.
    assert!(
        !stderr.lines().any(|l| l.starts_with("PASS notes-api/")),
        "{all}"
    );
    let (_, failed) = counts(&stdout);
    assert!(failed >= 1, "{all}");
    assert_left_nothing(&id, &all);
}

#[test]
fn docker_smoke_sigint_leaves_nothing_behind() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-sigint");
    let mut guard = RunGuard::default();
    let mut run = Running::start(ws.path(), &["smoke"]);
    let line = run.wait_for_line(COLD, |l| run_id_of(l).is_some());
    let id = run_id_of(&line).unwrap();
    guard.0.push(id.clone());
    run.wait_for_line(COLD, |l| l.starts_with("PASS notes-db/health "));
    assert!(
        !run_objects(&id).is_empty(),
        "a started run has objects in the engine"
    );
    kill(run.pid(), Signal::SIGINT).unwrap();
    let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(130), "{all}");
    assert!(stderr.contains("interrupted"), "{all}");
    assert_left_nothing(&id, &all);
}

#[test]
fn docker_smoke_sweeps_a_killed_run() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-sweep");
    let mut guard = RunGuard::default();
    let mut run = Running::start(ws.path(), &["smoke"]);
    let line = run.wait_for_line(COLD, |l| run_id_of(l).is_some());
    let id = run_id_of(&line).unwrap();
    guard.0.push(id.clone());
    let deadline = Instant::now() + COLD;
    while !run_objects(&id).iter().any(|o| o.starts_with("container ")) {
        assert!(Instant::now() < deadline, "run {id} never made a container");
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("smoke ended ({status}) before it made a container");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    kill(run.pid(), Signal::SIGKILL).unwrap();
    let (code, _, _) = run.finish(Duration::from_secs(30));
    assert_eq!(code, None, "killed by a signal");
    // A docker command the killed run had started may still land: wait until the engine's
    // view of the run stops changing (bounded) before looking.
    let mut before = run_objects(&id);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        let now = run_objects(&id);
        if now == before {
            break;
        }
        before = now;
    }
    assert!(
        before.contains(&format!("container {id}-notes-db")),
        "the killed run's database container is gone before any sweep: {before:?}"
    );
    assert!(before.contains(&format!("network {id}")), "{before:?}");

    let (code, stdout, stderr) = smoke(ws.path(), &["notes-mcp"], &mut guard);
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(0), "{all}");
    assert!(
        stderr
            .lines()
            .any(|l| l == format!("swept the leftovers of killed run {id}")),
        "{all}"
    );
    assert_left_nothing(&id, &all);
    assert_left_nothing(&run_id(&stderr), &all);
}

#[test]
fn docker_two_concurrent_smoke_runs_both_pass() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-two");
    let mut guard = RunGuard::default();
    let mut a = Running::start(ws.path(), &["smoke"]);
    let mut b = Running::start(ws.path(), &["smoke"]);
    let mut ids = Vec::new();
    for run in [&mut a, &mut b] {
        let line = run.wait_for_line(COLD, |l| run_id_of(l).is_some());
        let id = run_id_of(&line).unwrap();
        guard.0.push(id.clone());
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let mut outputs = Vec::new();
    for run in [&mut a, &mut b] {
        let (code, stdout, stderr) = run.finish(COLD);
        let all = format!("{stderr}\n{stdout}");
        assert_eq!(code, Some(0), "{all}");
        let (passed, failed) = counts(&stdout);
        assert_eq!((passed, failed), (pass_lines(&stderr).len(), 0), "{all}");
        assert!(passed > 0, "{all}");
        outputs.push(all);
    }
    for (i, all) in outputs.iter().enumerate() {
        // Neither run took the other, alive, for a killed one.
        let other = &ids[1 - i];
        assert!(!all.contains(&format!("killed run {other}")), "{all}");
        assert_left_nothing(&ids[i], all);
    }
}

#[test]
fn docker_smoke_health_deadline_holds_against_a_server_that_never_answers() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-hang");
    let descriptor = ws.path().join("services/notes-api/service.toml");
    // Accepts connections on 8080 and never answers: every health request hangs.
    edit_once(
        &descriptor,
        "[run]\n",
        "[run]\ncommand = [\"python3\", \"-c\", \"import socket, time\\ns = socket.socket()\\ns.bind(('0.0.0.0', 8080))\\ns.listen()\\ntime.sleep(3600)\"]\n",
    );
    edit_once(
        &descriptor,
        "[health]\ndeadline_secs = 60\n",
        "[health]\ndeadline_secs = 5\n",
    );
    let mut guard = RunGuard::default();
    let (code, stdout, stderr) = smoke(ws.path(), &["notes-api"], &mut guard);
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(1), "{all}");
    let id = run_id(&stderr);
    let fail = stderr
        .lines()
        .find(|l| l.starts_with("FAIL notes-api/health ("))
        .unwrap_or_else(|| panic!("no `FAIL notes-api/health` line:\n{all}"));
    let secs: f64 = fail["FAIL notes-api/health (".len()..]
        .split_once("s)")
        .and_then(|(s, _)| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in {fail:?}"));
    assert!(
        (5.0..=8.0).contains(&secs),
        "a hanging health request held the wait to {secs}s past a 5 s deadline: {fail}"
    );
    assert_left_nothing(&id, &all);
}

#[test]
fn docker_smoke_tcp_check_fails_when_nothing_listens() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-tcp");
    let descriptor = ws.path().join("services/notes-api/service.toml");
    // Port 9999 is published, but nothing in the container listens on it.
    edit_once(
        &descriptor,
        "ports = [{ container = 8080, host = 18080 }]",
        "ports = [{ container = 8080, host = 18080 }, { container = 9999 }]",
    );
    let mut text = std::fs::read_to_string(&descriptor).unwrap();
    text.push_str(
        "\n[[smoke]]\ntype = \"tcp\"\nname = \"listens\"\nport = 8080\n\n[[smoke]]\ntype = \"tcp\"\nname = \"nothing-listens\"\nport = 9999\n",
    );
    std::fs::write(&descriptor, text).unwrap();
    let mut guard = RunGuard::default();
    let (code, stdout, stderr) = smoke(ws.path(), &["notes-api"], &mut guard);
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(1), "{all}");
    let id = run_id(&stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("PASS notes-api/listens ")),
        "{all}"
    );
    let fail = stderr
        .lines()
        .find(|l| l.starts_with("FAIL notes-api/nothing-listens "))
        .unwrap_or_else(|| panic!("a port nothing listens on passed:\n{all}"));
    assert!(fail.contains("nothing listens"), "{fail}");
    assert_eq!(counts(&stdout).1, 1, "{all}");
    assert_left_nothing(&id, &all);
}

#[test]
fn docker_smoke_ctrl_c_to_the_job_during_teardown_leaves_nothing_behind() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-ctrl-c");
    let mut guard = RunGuard::default();
    let mut run = Running::start_as_job(ws.path(), &["smoke"]);
    let line = run.wait_for_line(COLD, |l| run_id_of(l).is_some());
    let id = run_id_of(&line).unwrap();
    guard.0.push(id.clone());
    // notes-mcp's check is the last one: right after it, the run tears down. A terminal's
    // Ctrl-C goes to the whole job, the docker commands of the teardown included.
    run.wait_for_line(COLD, |l| {
        l.starts_with("PASS notes-mcp/") || l.starts_with("FAIL notes-mcp/")
    });
    killpg(run.pid(), Signal::SIGINT).unwrap();
    let (code, stdout, stderr) = run.finish(Duration::from_secs(120));
    let all = format!("{stderr}\n{stdout}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("teardown: ")),
        "teardown was cut short:\n{all}"
    );
    assert_eq!(code, Some(130), "{all}");
    assert_left_nothing(&id, &all);
}

/// `git` with no user or system configuration, so the test sees only what it sets.
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=xtask test",
            "-c",
            "user.email=test@xtask.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

#[test]
fn docker_smoke_fetches_a_git_source_through_a_mirror_and_fails_at_once_without_one() {
    let _serial = engine::serial();
    let ws = eco_copy("smoke-git");
    // The MCP server's code becomes a git repository that is only reachable through a mirror.
    let mirrors = ws.path().join("mirrors");
    let upstream = mirrors.join("notes-mcp");
    tests::copy_tree(&ws.path().join("components/notes-mcp"), &upstream);
    git(&upstream, &["init", "-q"]);
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "server"]);
    std::fs::remove_dir_all(ws.path().join("components/notes-mcp")).unwrap();
    edit_once(
        &ws.path().join("services/notes-mcp/service.toml"),
        "path = \"components/notes-mcp\"",
        "git = \"https://git.invalid/org/notes-mcp\"\nrev = \"main\"",
    );
    let run = |mirror: Option<&str>| {
        let mut cmd = std::process::Command::new(tests::xtask_bin());
        cmd.arg("--workspace")
            .arg(ws.path())
            .args(["smoke", "notes-mcp"])
            // A proxy on a port where nothing listens: the remote is unreachable, at once.
            .env("https_proxy", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env_remove("XTASK_MIRRORS");
        if let Some(m) = mirror {
            cmd.env("XTASK_MIRRORS", m);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let mut guard = RunGuard::default();

    let (code, stdout, stderr) = run(None);
    if let Some(id) = stderr.lines().find_map(run_id_of) {
        guard.0.push(id);
    }
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(1), "{all}");
    assert!(
        stderr.contains(
            "`notes-mcp` (services/notes-mcp/service.toml): could not fetch the source from https://git.invalid/org/notes-mcp:"
        ),
        "{all}"
    );
    assert!(
        stderr.contains("\"https://git.invalid/org/\" = \""),
        "{all}"
    );
    assert!(
        stderr.contains("XTASK_MIRRORS='https://git.invalid/org/="),
        "{all}"
    );
    // It stopped before building or starting anything.
    assert!(image_lines(&stderr).is_empty(), "{all}");
    assert!(!stderr.contains("PASS "), "{all}");
    assert_left_nothing(&run_id(&stderr), &all);

    let mirror = format!("https://git.invalid/org/={}/", mirrors.display());
    let (code, stdout, stderr) = run(Some(&mirror));
    if let Some(id) = stderr.lines().find_map(run_id_of) {
        guard.0.push(id);
    }
    let all = format!("{stderr}\n{stdout}");
    assert_eq!(code, Some(0), "{all}");
    assert!(
        pass_lines(&stderr)
            .iter()
            .any(|l| l.starts_with("PASS notes-mcp/")),
        "{all}"
    );
    assert!(ws
        .path()
        .join(".xtask/sources/notes-mcp/server.py")
        .is_file());
    assert_left_nothing(&run_id(&stderr), &all);
}
