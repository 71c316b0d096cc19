//! An OpenSSH host, through the user's `ssh` binary (their config, agent, keys and known hosts
//! apply). The first command opens one master connection (ControlMaster) with a control socket
//! in a private directory; every later command, file write and port forward rides on it, and
//! closing the target ends it.
//!
//! `ssh` parses options even after the destination, so the destination comes after `--`, it is
//! refused when it starts with `-`, and the remote command line is built by `quote`, whose
//! words all start with a quote.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::quote;
use crate::proc;

/// Passed to `ssh -F`: a config file instead of ~/.ssh/config (tests, unusual setups).
const CONFIG_ENV: &str = "XTASK_SSH_CONFIG";

/// Seconds the master connection outlives its last use, should the tool die without closing
/// it (a normal exit closes it at once).
const PERSIST_SECS: u32 = 300;

pub struct Ssh {
    /// The host's name, for messages.
    name: String,
    /// `user@host`.
    dest: String,
    port: Option<u16>,
    config: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The private directory that holds the control socket, once the master is up.
    dir: Option<PathBuf>,
    forwards: HashMap<u16, SocketAddr>,
}

impl Ssh {
    /// `spec` is `user@host[:port]`; `name` names the host in messages.
    pub fn new(name: &str, spec: &str) -> Result<Ssh> {
        let bad =
            || format!("invalid ssh target `{spec}` for host `{name}` (want user@host[:port])");
        let (user, rest) = spec.split_once('@').with_context(bad)?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(p.parse::<u16>().ok().filter(|p| *p > 0).with_context(bad)?),
            ),
            None => (rest, None),
        };
        let word_ok = |w: &str| {
            !w.is_empty()
                && !w.starts_with('-')
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !word_ok(user) || !word_ok(host) {
            bail!(bad());
        }
        let config = match std::env::var_os(CONFIG_ENV) {
            Some(v) if !v.is_empty() => {
                let p = PathBuf::from(v);
                if !p.is_file() {
                    bail!("{CONFIG_ENV}={} is not a file", p.display());
                }
                Some(p)
            }
            _ => None,
        };
        Ok(Ssh {
            name: name.to_string(),
            dest: format!("{user}@{host}"),
            port,
            config,
            state: Mutex::new(State::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ssh` with the options every call shares; the caller adds its own and `-- DEST ...`.
    fn ssh(&self, control: &Path) -> Command {
        let mut c = Command::new("ssh");
        if let Some(config) = &self.config {
            c.arg("-F").arg(config);
        }
        // Command-line options win over config files, so these hold whatever the user's
        // config says.
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
        c.args([
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]);
        c.args(["-o", "ControlMaster=auto"]);
        c.arg("-o").arg(format!("ControlPersist={PERSIST_SECS}"));
        c.arg("-o")
            .arg(format!("ControlPath={}", control.display()));
        if let Some(port) = self.port {
            c.arg("-p").arg(port.to_string());
        }
        c
    }

    pub fn control_path(&self) -> Option<PathBuf> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.dir.as_ref().map(|d| d.join("c"))
    }

    /// The control socket of a running master, starting one first if needed.
    fn master(&self) -> Result<PathBuf> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = &state.dir {
            return Ok(dir.join("c"));
        }
        let dir = private_dir()?;
        let control = dir.join("c");
        // ssh's own messages go to a file, not a pipe: the master lives on in the background
        // and must not hold a pipe of ours open.
        let log_path = dir.join("master.log");
        let log = File::create(&log_path).context("create the ssh log")?;
        let mut cmd = self.ssh(&control);
        cmd.args(["-N", "-f", "--", &self.dest])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let status = cmd.status();
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        match status {
            Ok(s) if s.success() && control.exists() => {
                state.dir = Some(dir);
                Ok(control)
            }
            Ok(s) => {
                let _ = fs::remove_dir_all(&dir);
                Err(self.connect_error(&log, &s.to_string()))
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(anyhow::Error::new(e).context(format!(
                    "cannot start `ssh` to reach {} (is OpenSSH's client installed?)",
                    self.name
                )))
            }
        }
    }

    /// What went wrong when connecting, in words, with what ssh said.
    fn connect_error(&self, log: &str, status: &str) -> anyhow::Error {
        let what = if log.contains("Permission denied") {
            format!(
                "cannot log in to {} as {}: permission denied (is the key authorized there, and loaded or named in the ssh config?)",
                self.name, self.dest
            )
        } else if log.contains("Host key verification failed")
            || log.contains("IDENTIFICATION HAS CHANGED")
        {
            format!(
                "the host key of {} ({}) is unknown or changed: check it and add it to known_hosts",
                self.name, self.dest
            )
        } else if [
            "Could not resolve",
            "Connection refused",
            "timed out",
            "No route to host",
            "Network is unreachable",
            "Connection closed",
            "Connection reset",
            "kex_exchange_identification",
        ]
        .iter()
        .any(|m| log.contains(m))
        {
            format!("cannot reach {} ({})", self.name, self.where_())
        } else {
            format!("ssh to {} ({}) failed ({status})", self.name, self.where_())
        };
        anyhow::anyhow!("{what}:\n{}", proc::tail(log, 5))
    }

    fn where_(&self) -> String {
        match self.port {
            Some(p) => format!("{} port {p}", self.dest),
            None => self.dest.clone(),
        }
    }

    fn alive(&self, control: &Path) -> bool {
        let mut cmd = self.ssh(control);
        cmd.args(["-O", "check", "--", &self.dest]);
        proc::output(&mut cmd, None).is_ok_and(|o| o.status.success())
    }

    /// A `Command` that runs `argv` on the host through the master connection, for callers
    /// that stream its output.
    pub fn command(&self, argv: &[impl AsRef<str>]) -> Result<Command> {
        let line = quote::command_line(argv)?;
        let control = self.master()?;
        let mut cmd = self.ssh(&control);
        cmd.args(["-T", "--", &self.dest, &line]);
        Ok(cmd)
    }

    pub fn exec(&self, argv: &[impl AsRef<str>], stdin: Option<&[u8]>) -> Result<Output> {
        let line = quote::command_line(argv)?;
        let control = self.master()?;
        let mut cmd = self.ssh(&control);
        cmd.args(["-T", "--", &self.dest, &line]);
        let out = proc::output(&mut cmd, stdin)?;
        // 255 is ssh's own failure, or a command that exits 255: tell them apart by asking
        // whether the connection still stands.
        if out.status.code() == Some(255) && !self.alive(&control) {
            bail!(
                "lost the ssh connection to {} running `{}`:\n{}",
                self.name,
                super::display(argv),
                proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
            );
        }
        Ok(out)
    }

    /// `docker save IMAGE | ssh HOST docker load`, streamed.
    pub fn pipe_image(&self, image: &str) -> Result<()> {
        let control = self.master()?;
        let mut save = Command::new("docker");
        save.args(["save", "--", image])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut saving = save.spawn().context("cannot start `docker save`")?;
        let stream = saving.stdout.take().expect("stdout is piped");
        let mut load = self.ssh(&control);
        load.args([
            "-T",
            "--",
            &self.dest,
            &quote::command_line(&["docker", "load"])?,
        ])
        .stdin(Stdio::from(stream))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let loaded = load.output();
        let saved = saving
            .wait_with_output()
            .context("wait for `docker save`")?;
        let loaded = loaded.context("cannot start `ssh` for `docker load`")?;
        let save_err = proc::tail(&String::from_utf8_lossy(&saved.stderr), 5);
        let load_err = proc::tail(&String::from_utf8_lossy(&loaded.stderr), 5);
        // When one side fails the other fails too: `docker load` on a cut stream, `docker save`
        // on a closed pipe. Report the side that failed first.
        let broken_pipe = saved.status.signal() == Some(libc_sigpipe())
            || save_err.to_lowercase().contains("broken pipe");
        let save_failed_first =
            !saved.status.success() && (loaded.status.success() || !broken_pipe);
        if save_failed_first {
            bail!(
                "`docker save {image}` failed ({}):\n{save_err}",
                saved.status
            );
        }
        if !loaded.status.success() {
            bail!(
                "`docker load` of {image} on {} failed ({}):\n{load_err}",
                self.name,
                loaded.status
            );
        }
        Ok(())
    }

    /// A local loopback address forwarded to `127.0.0.1:remote_port` on the host, through the
    /// master connection. Asking again for the same port gives the same address.
    pub fn forward(&self, remote_port: u16) -> Result<SocketAddr> {
        let control = self.master()?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = state.forwards.get(&remote_port) {
            return Ok(*addr);
        }
        // The free port is found by binding and letting go, so another process can take it in
        // between: then ssh refuses, and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            let local = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .context("find a free local port")?;
            let spec = format!("127.0.0.1:{}:127.0.0.1:{remote_port}", local.port());
            let mut cmd = self.ssh(&control);
            cmd.args(["-O", "forward", "-L", &spec, "--", &self.dest]);
            let out = proc::output(&mut cmd, None)?;
            if out.status.success() {
                state.forwards.insert(remote_port, local);
                return Ok(local);
            }
            last = proc::tail(&String::from_utf8_lossy(&out.stderr), 3);
        }
        bail!(
            "cannot forward a local port to port {remote_port} on {}:\n{last}",
            self.name
        )
    }

    /// Ends the master connection and removes its directory. Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(dir) = state.dir.take() else {
            return Ok(());
        };
        state.forwards.clear();
        let mut cmd = self.ssh(&dir.join("c"));
        cmd.args(["-O", "exit", "--", &self.dest]);
        let out = proc::output(&mut cmd, None);
        let _ = fs::remove_dir_all(&dir);
        let out = out?;
        if !out.status.success() {
            bail!(
                "closing the ssh connection to {} failed:\n{}",
                self.name,
                proc::tail(&String::from_utf8_lossy(&out.stderr), 3)
            );
        }
        Ok(())
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}

/// A new directory only this user can enter, with a short path: a control socket's path must
/// fit in about 100 bytes, and ssh adds a suffix while creating it.
fn private_dir() -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let tmp = std::env::temp_dir();
    let tmp_ok = tmp.to_str().is_some_and(|s| {
        s.len() <= 40 && !s.contains(|c: char| c.is_whitespace() || matches!(c, '%' | '"'))
    });
    let base = if tmp_ok { tmp } else { PathBuf::from("/tmp") };
    let mut last = None;
    for _ in 0..100 {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("xtask-ssh-{}-{n}", std::process::id()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("create {}", dir.display()));
            }
        }
    }
    Err(last.expect("tried")).context("create a private directory for the ssh control socket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let s = Ssh::new("h", "deploy@example.org:2222").unwrap();
        assert_eq!(
            (s.dest.as_str(), s.port),
            ("deploy@example.org", Some(2222))
        );
        let s = Ssh::new("h", "me@box").unwrap();
        assert_eq!((s.dest.as_str(), s.port), ("me@box", None));
        for bad in [
            "nouser",
            "@host",
            "me@",
            "-oProxyCommand=x@host",
            "me@-oProxyCommand=x",
            "me@host:0",
            "me@host:99999",
            "me@host:",
            "me@ho st",
            "me@host;id",
        ] {
            assert!(Ssh::new("h", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_directory_is_private_and_short() {
        use std::os::unix::fs::PermissionsExt;
        let dir = private_dir().unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        let len = dir.join("c").as_os_str().len();
        fs::remove_dir(&dir).unwrap();
        assert_eq!(mode, 0o700);
        assert!(len < 80, "{}", dir.display());
    }

    /// Nothing listens on port 1 of the loopback: the error names the host and says why.
    #[test]
    fn unreachable_host_is_named() {
        if Command::new("ssh").arg("-V").output().is_err() {
            return;
        }
        let s = Ssh::new("nowhere", "deploy@127.0.0.1:1").unwrap();
        let err = s.exec(&["true"], None).unwrap_err().to_string();
        assert!(err.contains("cannot reach nowhere"), "{err}");
        assert!(err.contains("Connection refused"), "{err}");
        assert!(s.control_path().is_none());
    }
}
