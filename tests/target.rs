//! How commands reach a host, through the binary's hidden `target-exec` and a real OpenSSH
//! server (the ssh test host in tests/support/sshhost.rs). Tests whose name says `docker` need
//! the Docker engine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tests::sshhost::SshHost;
use tests::{copy_tree, fixtures, text, xtask_bin, TempDir};

/// `xtask --workspace WS target-exec --ssh SPEC ARGS...` with the host's ssh config.
fn exec(host: &SshHost, args: &[&str], stdin: &[u8]) -> Output {
    exec_in(
        host,
        &fixtures().join("eco"),
        &["--ssh", &host.spec()],
        args,
        stdin,
    )
}

fn exec_in(host: &SshHost, ws: &Path, how: &[&str], args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--workspace")
        .arg(ws)
        .arg("target-exec")
        .args(how)
        .args(args);
    cmd.envs(host.envs());
    run(cmd, stdin)
}

fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run xtask");
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "xtask failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Whether `path` exists inside the host's container (looked at without ssh).
fn exists_on(host: &SshHost, path: &str) -> bool {
    host.exec_as("root", &["test", "-e", path]).status.success()
}

const HOSTILE: &[&str] = &[
    "$(touch /tmp/x)",
    "`touch /tmp/x`",
    "; rm -rf /tmp/y",
    "&& touch /tmp/x",
    "| touch /tmp/x",
    "> /tmp/x",
    "it's",
    "'",
    "\"double\" \\ quoted",
    "$HOME",
    "line one\nline two",
    "tab\there",
    "*",
    "~",
    "-n",
    "--",
    "é 日本 😀",
    "",
    " ",
];

#[test]
fn ssh_docker_hostile_argv_arrives_verbatim() {
    let host = SshHost::start();
    assert!(host.exec_as("root", &["touch", "/tmp/y"]).status.success());

    let mut args = vec!["run", "--", "printf", "%s\\0"];
    args.extend_from_slice(HOSTILE);
    let out = exec(&host, &args, b"");
    ok(&out);
    let want: Vec<u8> = HOSTILE
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    assert_eq!(out.stdout, want, "{:?}", text(&out.stdout));
    assert_eq!(text(&out.stderr), "");

    // As the command itself, a hostile word is a command by that exact name, not shell syntax.
    for word in [
        "$(touch /tmp/x)",
        "touch /tmp/x",
        "-oProxyCommand=touch /tmp/x",
    ] {
        let out = exec(&host, &["run", "--", word], b"");
        assert_eq!(
            out.status.code(),
            Some(127),
            "{word}: {}",
            text(&out.stderr)
        );
    }
    assert!(!exists_on(&host, "/tmp/x"), "a hostile argument ran");
    assert!(exists_on(&host, "/tmp/y"), "a hostile argument ran");

    // stdin reaches the remote command untouched, and exit codes come back.
    let data = b"line\n\0binary\xff'$(x)'".to_vec();
    let out = exec(&host, &["run", "--stdin", "--", "cat"], &data);
    assert_eq!(out.stdout, data);
    let out = exec(
        &host,
        &["run", "--", "sh", "-c", "echo err >&2; exit 7"],
        b"",
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stderr), "err\n");
    // run_ok: a failure names the command, the host and what it said.
    let out = exec(&host, &["run", "--check", "--", "ls", "/nonexistent"], b"");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("`ls /nonexistent` failed on"), "{err}");
    assert!(err.contains("No such file"), "{err}");
    assert_eq!(
        ok(&exec(&host, &["run", "--check", "--", "id", "-un"], b"")).trim(),
        "deploy"
    );
}

#[test]
fn ssh_docker_write_file_sets_mode_owner_and_content() {
    let host = SshHost::start();
    let path = "/srv/services/notes-api/secrets/app.env";
    let data = b"PASSWORD='s3cr$t `x` \"y\"'\nBINARY=\x00\xff\n".to_vec();

    let out = exec(&host, &["read", path], b"");
    assert_eq!(
        out.status.code(),
        Some(3),
        "missing file: {}",
        text(&out.stderr)
    );

    ok(&exec(&host, &["write", path, "--mode", "600"], &data));
    let stat = host.exec_as("root", &["stat", "-c", "%a %U %G", path]);
    assert_eq!(text(&stat.stdout).trim(), "600 deploy deploy");
    assert_eq!(host.exec_as("root", &["cat", path]).stdout, data);
    let out = exec(&host, &["read", path], b"");
    ok(&out);
    assert_eq!(out.stdout, data);
    // Parent directories were made, and no temp file is left beside the file.
    let ls = host.exec_as("root", &["ls", "-A", "/srv/services/notes-api/secrets"]);
    assert_eq!(text(&ls.stdout), "app.env\n");

    // Rewriting replaces content and mode.
    ok(&exec(&host, &["write", path, "--mode", "640"], b"short"));
    let stat = host.exec_as("root", &["stat", "-c", "%a %s", path]);
    assert_eq!(text(&stat.stdout).trim(), "640 5");

    // A read-only mode still gets its data (the file is opened before the chmod).
    let ro = "/srv/services/notes-api/secrets/read-only";
    ok(&exec(&host, &["write", ro, "--mode", "400"], b"ro"));
    let stat = host.exec_as("root", &["stat", "-c", "%a %U", ro]);
    assert_eq!(text(&stat.stdout).trim(), "400 deploy");
    assert_eq!(ok(&exec(&host, &["read", ro], b"")), "ro");

    // A path a shell would act on is just a path.
    let odd = "/srv/services/$(touch \"/tmp/x\")/it's ; rm -rf y/-n *";
    ok(&exec(&host, &["write", odd, "--mode", "644"], b"odd"));
    assert_eq!(host.exec_as("root", &["cat", odd]).stdout, b"odd");
    assert!(!exists_on(&host, "/tmp/x"));

    // Where deploy may not write, the error says which file and host.
    let out = exec(&host, &["write", "/etc/xtask-test", "--mode", "600"], b"x");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cannot write /etc/xtask-test on"), "{err}");
}

#[test]
fn ssh_docker_one_connection_serves_many_commands() {
    let host = SshHost::start();
    let before = host.logins();
    let out = exec(
        &host,
        &["run", "--repeat", "5", "--show-control", "--", "true"],
        b"",
    );
    ok(&out);
    assert_eq!(
        host.logins() - before,
        1,
        "five commands, one login:\n{}",
        host.log()
    );

    let err = text(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("control: "))
        .unwrap_or_else(|| panic!("no control line: {err}"));
    let (path, exists) = line.rsplit_once(" exists=").unwrap();
    assert_eq!(exists, "true", "control socket while connected");
    let path = Path::new(path);
    // Closing ended the master: its socket and private directory are gone, and no process
    // still uses the socket.
    assert!(!path.exists(), "{} still exists", path.display());
    assert!(!path.parent().unwrap().exists());
    assert!(
        !processes_mentioning(path.to_str().unwrap()),
        "an ssh master outlived the run"
    );
}

/// Whether any process's command line mentions `needle`.
fn processes_mentioning(needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
}

#[test]
fn ssh_docker_pipe_image_streams_save_into_load() {
    // The "remote" docker of the test host is this machine's engine, so this proves the
    // `docker save | ssh docker load` stream works and keeps the image id; it cannot prove
    // that the image was absent there before.
    let host = SshHost::start();
    let image = format!("xtask-test/pipe:{}-{}", std::process::id(), host.port());
    let dir = TempDir::new("pipe-image");
    std::fs::write(dir.path().join("hello.txt"), "hello").unwrap();
    let import = Command::new("sh")
        .args([
            "-c",
            "tar -C \"$1\" -c hello.txt | docker import - \"$2\"",
            "sh",
        ])
        .arg(dir.path())
        .arg(&image)
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", text(&import.stderr));
    let _cleanup = RemoveImage(image.clone());
    let local_id = text(
        &Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &image])
            .output()
            .unwrap()
            .stdout,
    );

    ok(&exec(&host, &["pipe-image", &image], b""));
    let remote_id = ok(&exec(
        &host,
        &[
            "run", "--check", "--", "docker", "image", "inspect", "--format", "{{.Id}}", &image,
        ],
        b"",
    ));
    assert_eq!(remote_id.trim(), local_id.trim());

    let out = exec(
        &host,
        &["pipe-image", "xtask-test/no-such-image:never"],
        b"",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("docker save xtask-test/no-such-image:never"),
        "{err}"
    );
}

struct RemoveImage(String);
impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "--force", &self.0])
            .output();
    }
}

#[test]
fn ssh_docker_forward_reaches_a_remote_server() {
    let host = SshHost::start();
    assert!(host
        .exec_as(
            "deploy",
            &["sh", "-c", "echo forwarded > /srv/services/hello.txt"]
        )
        .status
        .success());
    // Listening on the container's loopback only: reachable through ssh, not otherwise.
    let server = Command::new("docker")
        .args(["exec", "--detach", "--user", "deploy", host.container()])
        .args([
            "python3",
            "-m",
            "http.server",
            "18765",
            "--bind",
            "127.0.0.1",
        ])
        .args(["--directory", "/srv/services"])
        .output()
        .unwrap();
    assert!(server.status.success(), "{}", text(&server.stderr));

    let mut cmd = Command::new(xtask_bin());
    cmd.args(["target-exec", "--ssh", &host.spec(), "forward", "18765"])
        .envs(host.envs())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap_or_else(|_| {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("no address from forward: {line:?} {err}")
    });
    assert!(addr.ip().is_loopback());

    // The server may still be starting: a forwarded connection to a closed port is accepted
    // and then closed, so retry until an answer comes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let answer = TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        });
        match answer {
            Ok(buf) if buf.starts_with("HTTP/") => break buf,
            _ if Instant::now() > deadline => panic!("no answer through {addr}: {answer:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(body.ends_with("forwarded\n"), "{body}");

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    // The forward ended with the connection.
    assert!(TcpStream::connect(addr)
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })
        .map_or(true, |b| b.is_empty()));
}

/// Through a host file: `--host NAME` loads the workspace, and errors name the host.
#[test]
fn ssh_docker_host_file_and_login_errors() {
    let host = SshHost::start();
    let ws = TempDir::new("target-ws");
    copy_tree(&fixtures().join("eco"), ws.path());
    let hosts = ws.path().join("hosts/testbox.toml");
    let toml = std::fs::read_to_string(&hosts)
        .unwrap()
        .replace("deploy@127.0.0.1:2222", &host.spec());
    std::fs::write(&hosts, toml).unwrap();

    let testbox = ["--host", "testbox"];
    let out = exec_in(&host, ws.path(), &testbox, &["run", "--", "hostname"], b"");
    ok(&out);
    // The local host of the same workspace runs here.
    let local = exec_in(
        &host,
        ws.path(),
        &["--host", "local"],
        &["run", "--", "hostname"],
        b"",
    );
    assert_ne!(ok(&local), ok(&out), "testbox is not this machine");

    // Another key: the server refuses it, and the message says so naming the host.
    let bad = host.dir().join("bad_config");
    let other_key = host.dir().join("other_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let config = std::fs::read_to_string(host.config()).unwrap().replace(
        &format!("\"{}\"", host.dir().join("id_ed25519").display()),
        &format!("\"{}\"", other_key.display()),
    );
    std::fs::write(&bad, config).unwrap();
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--workspace")
        .arg(ws.path())
        .args(["target-exec", "--host", "testbox", "run", "--", "true"])
        .env("XTASK_SSH_CONFIG", &bad);
    let out = run(cmd, b"");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot log in to testbox as deploy@127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn ssh_unreachable_host_is_named() {
    // Port 1 on the loopback: nothing listens there.
    let mut cmd = Command::new(xtask_bin());
    cmd.args([
        "target-exec",
        "--ssh",
        "deploy@127.0.0.1:1",
        "run",
        "--",
        "true",
    ]);
    let out = run(cmd, b"");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach deploy@127.0.0.1:1 (deploy@127.0.0.1 port 1)"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
}

#[test]
fn target_exec_is_hidden_from_help() {
    let out = Command::new(xtask_bin()).arg("--help").output().unwrap();
    assert!(!text(&out.stdout).contains("target-exec"));
}
