//! An SSH host for tests: a container with OpenSSH and a Docker CLI that drives this machine's
//! engine, reached on a loopback port with a key pair made for the test.
//!
//! - The image builds from the locally made base `xtask-base/python:bookworm` (made by
//!   `cargo xtask build` when missing; nothing is pulled) plus Debian's openssh-server, once,
//!   and is reused while its content label matches (recipe + base image id).
//! - The Docker CLI inside is this machine's own `docker` binary, bind-mounted read-only, and
//!   the engine's socket is mounted too: the "remote" docker is the same engine as the local
//!   one. So tests see what a command did, not a separate machine.
//! - `deploy` logs in with the test's key, may use docker, and owns the directories the test
//!   asks for. sshd logs (VERBOSE) go to the container's log, to count connections.
//! - An ssh config in the test's temp dir names the key and a known_hosts file of its own; set
//!   `XTASK_SSH_CONFIG` to it (see `envs`) and ~/.ssh is never touched.
//! - By default the container has a network of its own and sshd's port is published on a
//!   loopback port. With `Options::host_network` it shares this machine's network namespace
//!   instead (sshd on a free loopback port), so that a port the engine publishes, which is on
//!   this machine's network, is on the "remote" host's loopback too, as it is on a real host:
//!   deploy tests need that for health checks through `ssh -L`.
//! - The container is removed on drop, unless `XTASK_TEST_KEEP` is set.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{copy_tree, fixtures, text, xtask, TempDir};

pub const BASE_IMAGE: &str = "xtask-base/python:bookworm";
const IMAGE_REPO: &str = "xtask-test/sshhost";
const IMAGE_LABEL: &str = "xtask.test.sshhost";
/// Put on every container this module starts, to find leftovers of killed test runs.
pub const CONTAINER_LABEL: &str = "xtask.test=sshhost";
/// The id of the test process that started a container: gone means the container is a leftover.
const PID_LABEL: &str = "xtask.test.pid";
pub const USER: &str = "deploy";

const DOCKERFILE: &str = r#"ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \
 && rm -rf /var/lib/apt/lists/*
# `*` instead of useradd's locked `!`: no password works, but the account is not locked, which
# sshd would refuse even for keys. pam_loginuid cannot write in a container.
RUN useradd --create-home --shell /bin/bash deploy \
 && usermod -p '*' deploy \
 && mkdir -p /run/sshd \
 && ssh-keygen -A \
 && sed -i 's/^session\s*required\s*pam_loginuid.so/session optional pam_loginuid.so/' /etc/pam.d/sshd \
 && printf '%s\n' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' \
      'PermitRootLogin no' 'AllowUsers deploy' 'LogLevel VERBOSE' \
      > /etc/ssh/sshd_config.d/xtask-test.conf
COPY entrypoint.sh /usr/local/sbin/xtask-sshhost
CMD ["/bin/sh", "/usr/local/sbin/xtask-sshhost"]
"#;

const ENTRYPOINT: &str = r#"set -eu
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /home/deploy/.ssh/authorized_keys
chown deploy:deploy /home/deploy/.ssh/authorized_keys
chmod 600 /home/deploy/.ssh/authorized_keys
# Whatever group owns the engine's socket on this machine, deploy is in it.
if [ -S /var/run/docker.sock ]; then
  gid=$(stat -c %g /var/run/docker.sock)
  group=$(getent group "$gid" | cut -d: -f1)
  if [ -z "$group" ]; then
    groupadd -g "$gid" hostdocker
    group=hostdocker
  fi
  usermod -aG "$group" deploy
fi
for dir in ${DEPLOY_DIRS:-}; do
  install -d -o deploy -g deploy "$dir"
done
exec /usr/sbin/sshd -D -e
"#;

pub struct Options {
    /// Directories created owned by `deploy` (parents owned by root).
    pub dirs: Vec<String>,
    /// Share this machine's network namespace (`docker run --network host`), sshd listening on
    /// a free loopback port: then `127.0.0.1:PORT` as sshd sees it (an `ssh -L` forward) is a
    /// port the engine published on this machine, as on a real host whose docker is local.
    /// The default is a network of its own, sshd's port 22 published on a loopback port.
    pub host_network: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dirs: vec!["/srv/services".to_string()],
            host_network: false,
        }
    }
}

pub struct SshHost {
    container: String,
    port: u16,
    /// Key, config and known_hosts; an Option only so that `XTASK_TEST_KEEP` can keep it.
    dir: Option<TempDir>,
    alias: String,
}

impl SshHost {
    /// Starts a host with `/srv/services` owned by deploy.
    pub fn start() -> SshHost {
        SshHost::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> SshHost {
        let image = image();
        sweep_leftovers();
        let dir = TempDir::new("sshhost");
        let key = dir.path().join("id_ed25519");
        keygen(&key);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let container = format!("xtask-sshhost-{}-{}", std::process::id(), crate::unique());
        let (socket, cli) = docker_paths();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            container.clone(),
            "--label".into(),
            CONTAINER_LABEL.into(),
            "--label".into(),
            format!("{PID_LABEL}={}", std::process::id()),
        ];
        let mut port = 0;
        if opts.host_network {
            // The port is found by binding and letting go; sshd takes it a moment later (a
            // race with other processes that is retried below by the caller's wait).
            port = free_port();
            let conf = dir.path().join("sshd-port.conf");
            std::fs::write(&conf, format!("Port {port}\nListenAddress 127.0.0.1\n")).unwrap();
            args.extend([
                "--network".into(),
                "host".into(),
                "--volume".into(),
                format!(
                    "{}:/etc/ssh/sshd_config.d/xtask-port.conf:ro",
                    conf.display()
                ),
            ]);
        } else {
            args.extend(["--publish".into(), "127.0.0.1::22".into()]);
        }
        args.extend([
            "--volume".into(),
            format!("{}:/var/run/docker.sock", socket.display()),
            "--volume".into(),
            format!("{}:/usr/local/bin/docker:ro", cli.display()),
            "--env".into(),
            format!("AUTHORIZED_KEY={}", public.trim()),
            "--env".into(),
            format!("DEPLOY_DIRS={}", opts.dirs.join(" ")),
            image,
        ]);
        let out = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "start the ssh test host: {}",
            text(&out.stderr)
        );
        // From here on the container is ours to remove, whatever fails next.
        let mut host = SshHost {
            container,
            port,
            dir: Some(dir),
            alias: "xtask-sshhost".to_string(),
        };
        if !opts.host_network {
            host.port = host.published_port();
        }
        host.wait_for_sshd();
        host.write_config(&key);
        host.check_docker_cli();
        host
    }

    fn published_port(&self) -> u16 {
        let out = docker(&["port", &self.container, "22/tcp"]);
        let s = text(&out.stdout);
        let line = s.lines().find(|l| l.starts_with("127.0.0.1:"));
        line.and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no published ssh port: {s} {}", text(&out.stderr)))
    }

    /// Until sshd itself greets (Docker's proxy accepts connections before sshd listens).
    fn wait_for_sshd(&self) {
        let started = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 8];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-") {
                    return;
                }
            }
            let running = docker(&["inspect", "--format", "{{.State.Running}}", &self.container]);
            if started.elapsed() > Duration::from_secs(2) && text(&running.stdout).trim() != "true"
            {
                panic!(
                    "the ssh test host {} stopped (port {} taken?); its log:\n{}",
                    self.container,
                    self.port,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "sshd in {} did not answer on port {} within 60s; its log:\n{}",
                    self.container,
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn write_config(&self, key: &Path) {
        let known = self.dir().join("known_hosts");
        let config = format!(
            "Host {alias} 127.0.0.1\n  HostName 127.0.0.1\n  Port {port}\n  User {USER}\n  IdentityFile \"{key}\"\n  IdentitiesOnly yes\n  UserKnownHostsFile \"{known}\"\n  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n",
            alias = self.alias,
            port = self.port,
            key = key.display(),
            known = known.display(),
        );
        std::fs::write(self.config(), config).unwrap();
    }

    /// The bind-mounted client must run inside (a static build, or one the container's libc
    /// fits) and reach the engine as deploy.
    fn check_docker_cli(&self) {
        let out = self.exec_as(
            USER,
            &["docker", "version", "--format", "{{.Server.Version}}"],
        );
        assert!(
            out.status.success(),
            "the docker CLI bind-mounted into the ssh test host does not work there as {USER}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// The published loopback port of sshd.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `deploy@127.0.0.1:PORT`, as a host file's `ssh` would say it.
    pub fn spec(&self) -> String {
        format!("{USER}@127.0.0.1:{}", self.port)
    }

    /// A Host alias in the ssh config (`deploy@ALIAS` works too, port from the config).
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The ssh config file to pass as `XTASK_SSH_CONFIG` (or `ssh -F`).
    pub fn config(&self) -> PathBuf {
        self.dir().join("ssh_config")
    }

    /// Environment for a process that should reach this host.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![(
            "XTASK_SSH_CONFIG".to_string(),
            self.config().display().to_string(),
        )]
    }

    /// A scratch directory beside the key and config, removed with the host.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    /// Runs `argv` in the container as `user`, without ssh: to look at what a test did.
    pub fn exec_as(&self, user: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", "--user", user, &self.container];
        args.extend_from_slice(argv);
        docker(&args)
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        let out = docker(&["logs", &self.container]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// How many ssh connections have logged in so far.
    pub fn logins(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Accepted publickey for deploy"))
            .count()
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if std::env::var_os("XTASK_TEST_KEEP").is_some() {
            eprintln!(
                "keeping ssh test host {} on port {} (config {})",
                self.container,
                self.port,
                self.config().display()
            );
            // Keep the key and config too, so the printed config still works.
            std::mem::forget(self.dir.take());
            return;
        }
        let _ = Command::new("docker")
            .args(["rm", "--force", "--volumes", &self.container])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes ssh test hosts whose test process is gone (killed runs, `XTASK_TEST_KEEP`), once
/// per process.
fn sweep_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let out = docker(&[
            "ps",
            "--all",
            "--filter",
            &format!("label={CONTAINER_LABEL}"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
        ]);
        for line in text(&out.stdout).lines() {
            let Some((id, pid)) = line.split_once(' ') else {
                continue;
            };
            let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
            if !alive {
                let _ = docker(&["rm", "--force", "--volumes", id]);
            }
        }
    });
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker (this test needs Docker)")
}

fn keygen(key: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "xtask-test", "-f"])
        .arg(key)
        .output()
        .expect("run ssh-keygen (openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {}", text(&out.stderr));
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// The engine's socket and this machine's docker client, to mount into the container.
fn docker_paths() -> (PathBuf, PathBuf) {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => PathBuf::from(h.strip_prefix("unix://").unwrap_or_else(|| {
            panic!("the ssh test host needs a unix-socket DOCKER_HOST, not {h}")
        })),
        _ => PathBuf::from("/var/run/docker.sock"),
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cli = std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
        .expect("a docker client on PATH");
    (socket, std::fs::canonicalize(&cli).unwrap())
}

/// The test host's image, built when no image with this recipe's label exists.
fn image() -> String {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Other test processes may build it at the same time.
    let lock_path = std::env::temp_dir().join("xtask-test-sshhost-image.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();

    let base_id = base_image();
    let hash = fnv64(&[
        DOCKERFILE.as_bytes(),
        ENTRYPOINT.as_bytes(),
        base_id.as_bytes(),
    ]);
    let tag = format!("{IMAGE_REPO}:{hash:016x}");
    let out = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{IMAGE_LABEL}\"}}}}"),
        &tag,
    ]);
    if out.status.success() && text(&out.stdout).trim() == format!("{hash:016x}") {
        return tag;
    }
    let context = TempDir::new("sshhost-image");
    std::fs::write(context.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(context.path().join("entrypoint.sh"), ENTRYPOINT).unwrap();
    let out = Command::new("docker")
        .args(["build", "--quiet", "--build-arg"])
        .arg(format!("BASE_IMAGE={BASE_IMAGE}"))
        .arg("--label")
        .arg(format!("{IMAGE_LABEL}={hash:016x}"))
        .args(["--tag", &tag])
        .arg(context.path())
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "build the ssh test host image: {}",
        text(&out.stderr)
    );
    tag
}

/// The id of the locally made base image, made by `cargo xtask build` when missing (there is
/// no registry to pull from).
fn base_image() -> String {
    let id = || {
        let out = docker(&["image", "inspect", "--format", "{{.Id}}", BASE_IMAGE]);
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_string())
    };
    if let Some(id) = id() {
        return id;
    }
    let ws = TempDir::new("sshhost-base");
    copy_tree(&fixtures().join("eco"), ws.path());
    // notes-mcp builds from the python base: building it makes the base.
    let out = xtask(ws.path(), &["build", "notes-mcp"]);
    assert!(
        out.status.success(),
        "cargo xtask build (to make {BASE_IMAGE}): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    id().unwrap_or_else(|| panic!("{BASE_IMAGE} missing after cargo xtask build"))
}

/// FNV-1a: a stable content hash without a crypto dependency (this is a cache key).
fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
