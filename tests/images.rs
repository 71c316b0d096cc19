//! `build` against a real Docker engine: content-hash caching, a rebuild of exactly what
//! changed, a build failure that names the service and the step, and the built images doing
//! their job when run by hand.
//!
//! Every test here needs Docker (and the base images, which `build` makes when missing);
//! each works in its own temporary copy of the fixture and removes what it made.

mod engine;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::{docker, docker_quiet, eco_copy, image_id, image_label, image_lines, Images};
use tests::{text, xtask, TempDir};

const SERVICES: [&str; 3] = ["notes-api", "notes-db", "notes-mcp"];

fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// The summary line `N image(s) ready, B built, C cached, in Ts` as (N, B, C).
fn summary(stdout: &str) -> (usize, usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" ready, "))
        .unwrap_or_else(|| panic!("no summary line in stdout:\n{stdout}"));
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(3)
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(
        line.starts_with(&format!("{} image", nums[0]))
            && line.contains(&format!(
                " ready, {} built, {} cached, in ",
                nums[1], nums[2]
            )),
        "unexpected summary: {line}"
    );
    (nums[0], nums[1], nums[2])
}

/// Runs `build ARGS` in `ws`; asserts success and returns `service -> (what, reference)`.
fn build_ok(
    ws: &Path,
    args: &[&str],
    made: &mut Images,
) -> (BTreeMap<String, (String, String)>, String) {
    let mut argv = vec!["build"];
    argv.extend_from_slice(args);
    let out = xtask(ws, &argv);
    let stderr = text(&out.stderr);
    let lines = image_lines(&stderr);
    // Whatever this build made is removed at the end, whether or not the assertions hold.
    for (_, what, reference) in &lines {
        if what == "built" && !made.0.contains(reference) {
            made.0.push(reference.clone());
        }
    }
    assert!(
        out.status.success(),
        "build failed:\n{stderr}\n{}",
        text(&out.stdout)
    );
    let mut by_service = BTreeMap::new();
    for (svc, what, reference) in lines {
        assert!(
            by_service.insert(svc.clone(), (what, reference)).is_none(),
            "{svc} reported twice:\n{stderr}"
        );
    }
    (by_service, text(&out.stdout))
}

#[test]
fn docker_build_from_nothing_caches_and_rebuilds_only_what_changed() {
    let _serial = engine::serial();
    let ws = eco_copy("build-cache");
    // A unique comment in every Dockerfile makes every build context new to the engine, so the
    // first build really starts from no image of this content.
    let n = nonce();
    for svc in SERVICES {
        let df = ws.path().join("services").join(svc).join("Dockerfile");
        let mut f = std::fs::OpenOptions::new().append(true).open(&df).unwrap();
        writeln!(f, "# build-cache test {n}").unwrap();
    }
    let mut made = Images::default();

    // First build: every image is built, and the engine has them with the tool's labels.
    let (first, stdout) = build_ok(ws.path(), &[], &mut made);
    assert_eq!(summary(&stdout), (3, 3, 0), "{stdout}");
    assert_eq!(
        first.keys().map(String::as_str).collect::<Vec<_>>(),
        SERVICES,
        "{first:?}"
    );
    let mut ids = BTreeMap::new();
    for (svc, (what, reference)) in &first {
        assert_eq!(what, "built", "{svc}: {first:?}");
        let id = image_id(reference).unwrap_or_else(|| panic!("{reference} not in the engine"));
        assert_eq!(image_label(reference, "xtask.service"), *svc);
        assert_eq!(image_label(reference, "xtask.hash").len(), 64);
        ids.insert(svc.clone(), id);
    }

    // Second build: nothing changed, so no docker build runs and the same images are reused.
    let (second, stdout) = build_ok(ws.path(), &[], &mut made);
    assert_eq!(summary(&stdout), (3, 0, 3), "{stdout}");
    for svc in SERVICES {
        let (what, reference) = &second[svc];
        assert_eq!(what, "cached", "{svc}: {second:?}");
        assert_eq!(reference, &first[svc].1, "{svc} changed its tag");
        assert_eq!(image_id(reference).as_ref(), Some(&ids[svc]));
    }

    // One source file of notes-mcp changes: exactly notes-mcp is built again.
    let server = ws.path().join("components/notes-mcp/server.py");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&server)
        .unwrap();
    writeln!(f, "# changed by the build-cache test").unwrap();
    drop(f);
    let (third, stdout) = build_ok(ws.path(), &[], &mut made);
    assert_eq!(summary(&stdout), (3, 1, 2), "{stdout}");
    for svc in SERVICES {
        let (what, reference) = &third[svc];
        if svc == "notes-mcp" {
            assert_eq!(what, "built", "{third:?}");
            assert_ne!(reference, &first[svc].1, "a new content must get a new tag");
            let id = image_id(reference).expect("rebuilt image in the engine");
            assert_ne!(id, ids[svc], "notes-mcp was not rebuilt");
            assert_ne!(
                image_label(reference, "xtask.hash"),
                image_label(&first[svc].1, "xtask.hash")
            );
        } else {
            assert_eq!(what, "cached", "{svc}: {third:?}");
            assert_eq!(reference, &first[svc].1);
            assert_eq!(image_id(reference).as_ref(), Some(&ids[svc]));
        }
    }
}

#[test]
fn docker_build_failure_names_the_service_and_step_and_tags_nothing() {
    let _serial = engine::serial();
    let ws = eco_copy("build-fail");
    let dir = ws.path().join("services/broken-build");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("service.toml"),
        r#"name = "broken-build"
description = "An image whose Dockerfile fails"
status = "active"
kind = "mcp-stdio"

[source]
path = "services/broken-build"

[image]
base = "xtask-base/python:bookworm"

[run]
command = ["python3", "-c", "pass"]

[docs]
model = "test"
data = "none"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN false\n",
    )
    .unwrap();
    // The descriptor is valid: what fails is the image build itself.
    let check = xtask(ws.path(), &["check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let before = engine::image_tags("xtask/broken-build");
    assert!(before.is_empty(), "left over from elsewhere: {before:?}");

    let out = xtask(ws.path(), &["build", "broken-build"]);
    // Should the tool tag anything after all, the assertion below reports it; remove it anyway.
    let _made = Images(engine::image_tags("xtask/broken-build"));
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "build succeeded:\n{stderr}");
    assert!(
        !stdout.contains(" ready, "),
        "a failed build printed a summary: {stdout}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("broken-build")
            && l.contains("failed")
            && l.contains("Step ")
            && l.contains("RUN false")),
        "the service and the failing step are not named:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        engine::image_tags("xtask/broken-build"),
        Vec::<String>::new()
    );
}

/// Containers, network and volume of the hand-made deployment, removed on drop.
struct Deployment {
    containers: Vec<String>,
    network: String,
    volume: String,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in &self.containers {
            docker_quiet(&["rm", "-f", "-v", c]);
        }
        docker_quiet(&["network", "rm", &self.network]);
        docker_quiet(&["volume", "rm", "-f", &self.volume]);
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// One HTTP/1.0 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {raw:?}")))?;
    Ok((status, body.to_string()))
}

#[test]
fn docker_api_image_answers_its_health_route() {
    let _serial = engine::serial();
    let ws = eco_copy("api-health");
    let mut made = Images::default();
    let (built, _) = build_ok(ws.path(), &["notes-db", "notes-api"], &mut made);
    // Images of the fixture's own content are the engine's build cache for every smoke run;
    // they are kept (only content a test invented is removed).
    made.0.clear();
    let db_image = &built["notes-db"].1;
    let api_image = &built["notes-api"].1;

    let name = format!("xt-health-{}", nonce());
    let deployment = Deployment {
        containers: vec![format!("{name}-api"), format!("{name}-db")],
        network: name.clone(),
        volume: format!("{name}-data"),
    };
    let label = format!("xtask.test={name}");
    docker(&["network", "create", "--label", &label, &deployment.network]);
    docker(&["volume", "create", "--label", &label, &deployment.volume]);

    let secrets = TempDir::new("api-health-env");
    let password = random_hex(16);
    let db_env = secrets.path().join("db.env");
    let api_env = secrets.path().join("api.env");
    write_private(
        &db_env,
        &format!("POSTGRES_USER=notes\nPOSTGRES_DB=notes\nPOSTGRES_PASSWORD={password}\n"),
    );
    write_private(
        &api_env,
        &format!(
            "API_SECRET={}\nPORT=8080\nDATABASE_URL=postgresql://notes:{password}@notes-db:5432/notes\n",
            random_hex(32)
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [&db_env, &api_env] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }

    docker(&[
        "run",
        "--detach",
        "--name",
        &deployment.containers[1],
        "--label",
        &label,
        "--network",
        &deployment.network,
        "--network-alias",
        "notes-db",
        "--env-file",
        db_env.to_str().unwrap(),
        "--volume",
        &format!("{}:/var/lib/postgresql/data", deployment.volume),
        db_image,
    ]);
    docker(&[
        "run",
        "--detach",
        "--name",
        &deployment.containers[0],
        "--label",
        &label,
        "--network",
        &deployment.network,
        "--env-file",
        api_env.to_str().unwrap(),
        "--publish",
        "127.0.0.1::8080",
        api_image,
    ]);
    let port = docker(&["port", &deployment.containers[0], "8080/tcp"]);
    let addr: SocketAddr = port
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("8080 not published: {port:?}"));
    assert!(addr.ip().is_loopback(), "{addr}");

    let logs = |c: &str| {
        let out = std::process::Command::new("docker")
            .args(["logs", "--tail", "30", c])
            .output()
            .unwrap();
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match http_get(addr, "/health") {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("/health answered non-JSON {body:?}: {e}"));
                if v["status"] == "ok" && v["database"] == "ok" {
                    break;
                }
                format!("200 {body}")
            }
            Ok((status, body)) => format!("{status} {body}"),
            Err(e) => format!("error: {e}"),
        };
        let state = docker(&[
            "inspect",
            "--format",
            "{{.State.Status}}",
            &deployment.containers[0],
        ]);
        assert!(
            Instant::now() < deadline && state.trim() == "running",
            "/health never answered 200 ok/ok (api {}; last: {last})\n--- api ---\n{}\n--- db ---\n{}",
            state.trim(),
            logs(&deployment.containers[0]),
            logs(&deployment.containers[1])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn docker_build_without_the_index_uses_a_wheelhouse_installs_offline_and_keeps_no_pip_setting() {
    let _serial = engine::serial();
    let ws = eco_copy("build-wheelhouse");
    let df = ws.path().join("services/notes-api/Dockerfile");
    let mut f = std::fs::OpenOptions::new().append(true).open(&df).unwrap();
    writeln!(f, "# wheelhouse test {}", nonce()).unwrap();
    drop(f);
    let mut made = Images::default();
    let build = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(tests::xtask_bin());
        cmd.arg("--workspace")
            .arg(ws.path())
            .args(["build", "notes-api"])
            .env_remove("XTASK_WHEELHOUSE")
            .env_remove("XTASK_BUILD_NETWORK");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    // Builds on a network with no way out: the tool finds that out by itself (one container
    // asks the index) and builds from a wheelhouse made on this machine.
    let (code, stdout, stderr) = build(&[("XTASK_BUILD_NETWORK", "none")]);
    let lines = image_lines(&stderr);
    for (_, what, reference) in &lines {
        if what == "built" {
            made.0.push(reference.clone());
        }
    }
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("notes-api: making its wheelhouse"),
        "{stderr}"
    );
    let [(_, what, reference)] = lines.as_slice() else {
        panic!("one image line expected:\n{stderr}");
    };
    assert_eq!(what, "built", "{stderr}");
    assert_eq!(image_label(reference, "xtask.wheelhouse"), "true");
    // The requirement came from the wheelhouse (the build had no network at all), and the
    // image keeps no setting that would stop pip from using an index later.
    let import = Command::new("docker")
        .args(["run", "--rm", "--network", "none", reference])
        .args(["python", "-c", "import pg8000"])
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", text(&import.stderr));
    let env = docker(&["image", "inspect", "--format", "{{.Config.Env}}", reference]);
    assert!(!env.contains("PIP_NO_INDEX"), "{env}");
    assert!(!env.contains("PIP_FIND_LINKS"), "{env}");

    // Asked for outright, a wheelhouse build is the same content: the same image, no build
    // (and no pip run for the wheelhouse, which is kept).
    let (code, stdout, stderr) = build(&[("XTASK_WHEELHOUSE", "1")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary(&stdout), (1, 0, 1), "{stderr}\n{stdout}");
    assert!(!stderr.contains("package index"), "{stderr}");
    assert!(!stderr.contains("making its wheelhouse"), "{stderr}");

    // Settings that mean nothing are refused, naming them.
    let (code, _, stderr) = build(&[("XTASK_BUILD_NETWORK", "--privileged")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("XTASK_BUILD_NETWORK=\"--privileged\""),
        "{stderr}"
    );
    let (code, _, stderr) = build(&[("XTASK_WHEELHOUSE", "yes")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("XTASK_WHEELHOUSE=\"yes\""), "{stderr}");
}

/// Whether this machine's apt configuration names `suite` (either source format).
fn host_apt_names(suite: &str) -> bool {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    texts.iter().any(|t| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.split_whitespace().any(|w| w == suite))
    })
}

#[test]
fn docker_base_images_get_the_fixes_of_the_update_suites_this_machine_names() {
    let _serial = engine::serial();
    let ws = eco_copy("build-bases");
    let mut made = Images::default();
    // Makes the bases when missing; nothing else is needed of this build.
    build_ok(ws.path(), &["notes-mcp"], &mut made);
    for base in ["xtask-base/python:bookworm", "xtask-base/postgres:bookworm"] {
        if image_id(base).is_none() {
            continue; // only the bases this build needed
        }
        let out = Command::new("docker")
            .args(["run", "--rm", "--network", "none", base])
            .args(["cat", "/etc/apt/sources.list.d/xtask-updates.list"])
            .output()
            .unwrap();
        let list = text(&out.stdout);
        for suite in ["bookworm-security", "bookworm-updates"] {
            assert_eq!(
                list.lines().any(|l| l.ends_with(&format!(" {suite} main"))),
                host_apt_names(suite),
                "{base}: {suite} listed in the image iff this machine's apt names it:\n{list}"
            );
        }
    }
}
