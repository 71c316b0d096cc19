//! Where commands run: the local machine, or an OpenSSH host (the user's `ssh`, so their
//! config, agent and keys apply; one multiplexed connection per run). Commands are argv; over
//! SSH the remote side needs one shell string, built by `quote` alone.
//!
//! Files are written by one fixed shell script that gets the path and mode as positional
//! arguments and the data on stdin, so the same code path (and the same tests) serve both
//! kinds of target, and no data ever appears on a command line.

pub mod debug;
pub mod quote;
mod ssh;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;

use anyhow::{bail, Context, Result};

use crate::model::{HostFile, Reach};
use crate::proc;

pub use ssh::Ssh;

/// A host that runs argv commands.
pub enum Target {
    /// The machine the tool runs on.
    Local,
    /// An OpenSSH host, reached over one multiplexed connection made on first use.
    Ssh(Ssh),
}

/// Exit code of the read script when the file does not exist.
const MISSING: i32 = 3;

/// Writes stdin to `$1` with mode `$2`, atomically: a temp file beside the target (mktemp makes
/// it 0600, owner only), its mode set before any data is in it, then renamed over the target.
/// A reader sees the old file or the new one, never a partial one, and a secret is never
/// readable by others, not even for a moment. The temp file is opened for writing before the
/// chmod, so a read-only mode (0400) does not lock its owner out of writing the data.
const WRITE_SCRIPT: &str = r#"set -eu
path=$1
mode=$2
dir=$(dirname -- "$path")
mkdir -p -- "$dir"
if [ -d "$path" ]; then
  echo "$path is a directory" >&2
  exit 2
fi
tmp=$(mktemp "$dir/.xtask-write.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
exec 3> "$tmp"
chmod "$mode" "$tmp"
cat >&3
exec 3>&-
mv -f -- "$tmp" "$path"
trap - EXIT
"#;

/// Prints `$1`, or exits with MISSING when there is no such file (as opposed to one that cannot
/// be read, which is an error).
const READ_SCRIPT: &str = r#"if [ -e "$1" ] || [ -L "$1" ]; then
  exec cat -- "$1"
fi
dir=$(dirname -- "$1")
if [ -d "$dir" ] && [ ! -x "$dir" ]; then
  echo "cannot search directory $dir" >&2
  exit 1
fi
exit 3
"#;

impl Target {
    /// How the tool reaches `host`. Makes no connection yet.
    pub fn for_host(host: &HostFile) -> Result<Target> {
        match host.reach {
            Reach::Local => Ok(Target::Local),
            Reach::Ssh => {
                let spec = host.ssh.as_deref().with_context(|| {
                    format!(
                        "host `{}` is reached by ssh but has no `ssh` target",
                        host.name
                    )
                })?;
                Ok(Target::Ssh(Ssh::new(&host.name, spec)?))
            }
            other => bail!(
                "host `{}` is reached by {}: the tool cannot run commands there",
                host.name,
                other.as_str()
            ),
        }
    }

    /// For messages: `local` or the host's name.
    pub fn name(&self) -> &str {
        match self {
            Target::Local => "local",
            Target::Ssh(s) => s.name(),
        }
    }

    /// Runs `argv` to completion; the exit status is the caller's to judge.
    pub fn run(&self, argv: &[impl AsRef<str>]) -> Result<Output> {
        self.exec(argv, None)
    }

    /// Runs `argv` with `stdin` as its standard input; the exit status is the caller's to judge.
    pub fn run_input(&self, argv: &[impl AsRef<str>], stdin: &[u8]) -> Result<Output> {
        self.exec(argv, Some(stdin))
    }

    /// Runs `argv` and returns its stdout, trimmed; a non-zero exit is an error that names the
    /// command, the host and the end of what it printed on stderr.
    pub fn run_ok(&self, argv: &[impl AsRef<str>]) -> Result<String> {
        let out = self.run(argv)?;
        if !out.status.success() {
            bail!(
                "`{}` failed on {} ({}):\n{}",
                display(argv),
                self.name(),
                out.status,
                proc::tail(&String::from_utf8_lossy(&out.stderr), 15)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `argv`, handing each line of its stdout and stderr to `line` as it comes (for
    /// `logs -f`); returns the exit code.
    pub fn stream(&self, argv: &[impl AsRef<str>], line: &(dyn Fn(&str) + Sync)) -> Result<i32> {
        use std::io::BufRead;
        let mut cmd = match self {
            Target::Local => {
                quote::command_line(argv)?;
                let (program, args) = argv.split_first().context("empty command")?;
                proc::cmd(program.as_ref(), args.iter().map(|a| a.as_ref()))
            }
            Target::Ssh(s) => s.command(argv)?,
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", display(argv)))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for l in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
                    line(&l);
                }
            });
            for l in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                line(&l);
            }
        });
        Ok(child.wait()?.code().unwrap_or(-1))
    }

    fn exec(&self, argv: &[impl AsRef<str>], stdin: Option<&[u8]>) -> Result<Output> {
        match self {
            Target::Local => {
                let Some((program, args)) = argv.split_first() else {
                    bail!("empty command");
                };
                // Checked here so both kinds of target refuse the same argv.
                quote::command_line(argv)?;
                let mut cmd = proc::cmd(program.as_ref(), args.iter().map(|a| a.as_ref()));
                proc::output(&mut cmd, stdin)
            }
            Target::Ssh(s) => s.exec(argv, stdin),
        }
    }

    /// Writes `data` to the absolute `path` with `mode` (e.g. `0o600`), creating parent
    /// directories; atomic, and the mode is in place before the data is.
    pub fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        check_path(path)?;
        if mode > 0o7777 {
            bail!("invalid file mode {mode:o} for {path}");
        }
        let mode = format!("{mode:o}");
        let out = self.run_input(&["sh", "-c", WRITE_SCRIPT, "sh", path, &mode], data)?;
        if !out.status.success() {
            bail!(
                "cannot write {path} on {}: {}",
                self.name(),
                proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
            );
        }
        Ok(())
    }

    /// The content of the absolute `path`, or `None` when there is no such file.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        check_path(path)?;
        let out = self.run(&["sh", "-c", READ_SCRIPT, "sh", path])?;
        match out.status.code() {
            Some(0) => Ok(Some(out.stdout)),
            Some(MISSING) => Ok(None),
            _ => bail!(
                "cannot read {path} on {} ({}): {}",
                self.name(),
                out.status,
                proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
            ),
        }
    }

    /// Makes the local image `image` present on the target's engine: `docker save | ssh docker
    /// load`. Nothing to do locally.
    pub fn pipe_image(&self, image: &str) -> Result<()> {
        match self {
            Target::Local => Ok(()),
            Target::Ssh(s) => s.pipe_image(image),
        }
    }

    /// A local address that reaches `remote_port` on the target's loopback interface: for
    /// health checks run from this machine.
    pub fn forward(&self, remote_port: u16) -> Result<SocketAddr> {
        match self {
            Target::Local => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, remote_port))),
            Target::Ssh(s) => s.forward(remote_port),
        }
    }

    /// The control socket of the SSH connection, while there is one.
    pub fn control_path(&self) -> Option<PathBuf> {
        match self {
            Target::Local => None,
            Target::Ssh(s) => s.control_path(),
        }
    }

    /// Ends the SSH connection (and its forwards). Dropping the target does the same but
    /// cannot report a failure.
    pub fn close(self) -> Result<()> {
        match self {
            Target::Local => Ok(()),
            Target::Ssh(s) => s.close(),
        }
    }
}

/// `program arg arg` for messages.
fn display(argv: &[impl AsRef<str>]) -> String {
    argv.iter()
        .map(|a| a.as_ref())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Paths on a target are absolute: a relative one would mean the ssh user's home directory
/// remotely and the current directory locally.
fn check_path(path: &str) -> Result<()> {
    if !path.starts_with('/') || path.ends_with('/') || path.contains('\0') {
        bail!("`{path}` is not an absolute file path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!(
                "xtask-target-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn path(&self, rel: &str) -> String {
            self.0.join(rel).to_str().unwrap().to_string()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn host(reach: Reach, ssh: Option<&str>) -> HostFile {
        let mut text = format!(
            "name = \"h\"\ndescription = \"d\"\nreach = \"{}\"\n",
            reach.as_str()
        );
        if let Some(s) = ssh {
            text.push_str(&format!("ssh = \"{s}\"\nroot = \"/srv\"\n"));
        }
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn for_host_picks_the_way_in() {
        assert!(matches!(
            Target::for_host(&host(Reach::Local, None)).unwrap(),
            Target::Local
        ));
        let t = Target::for_host(&host(Reach::Ssh, Some("deploy@example.org:2222"))).unwrap();
        assert_eq!(t.name(), "h");
        assert!(t.control_path().is_none(), "no connection before first use");
        let err = Target::for_host(&host(Reach::GithubActions, None))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("github-actions"), "{err}");
        let err = Target::for_host(&host(Reach::Ssh, None))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no `ssh` target"), "{err}");
    }

    #[test]
    fn local_run_passes_argv_verbatim() {
        let t = Target::Local;
        let words = ["$(touch /tmp/xtask-target-pwned)", "a b", "'", "\n", ""];
        let mut argv = vec!["printf", "%s\\0"];
        argv.extend(words);
        let out = t.run(&argv).unwrap();
        let want: Vec<u8> = words
            .iter()
            .flat_map(|w| [w.as_bytes(), b"\0"].concat())
            .collect();
        assert_eq!(out.stdout, want);
        assert!(!std::path::Path::new("/tmp/xtask-target-pwned").exists());
        assert!(t.run(&["printf", "a\0b"]).is_err(), "NUL refused");
        assert!(t.run(&[] as &[&str]).is_err());
    }

    #[test]
    fn local_run_ok_and_run_input() {
        let t = Target::Local;
        assert_eq!(t.run_ok(&["echo", " hi "]).unwrap(), "hi");
        let err = t
            .run_ok(&["sh", "-c", "echo out; echo boom >&2; exit 3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sh -c"), "{err}");
        assert!(err.contains("failed on local"), "{err}");
        assert!(err.contains("boom"), "{err}");
        let out = t.run(&["sh", "-c", "exit 4"]).unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "run leaves the status to the caller"
        );
        let out = t.run_input(&["cat"], b"fed\0bytes").unwrap();
        assert_eq!(out.stdout, b"fed\0bytes");
    }

    #[test]
    fn local_write_and_read_file() {
        let dir = Scratch::new("files");
        let t = Target::Local;
        let path = dir.path("a/b/c/secret.env");
        assert_eq!(t.read_file(&path).unwrap(), None);
        let data = b"KEY='$(not run)'\n\0binary\xff".to_vec();
        t.write_file(&path, &data, 0o600).unwrap();
        assert_eq!(t.read_file(&path).unwrap().as_deref(), Some(&data[..]));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        // Replacing changes the mode too, and leaves no temp file behind.
        t.write_file(&path, b"new", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path("a/b/c")).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // An empty file, and a path with characters a shell would act on.
        let odd = dir.path("we'ird $(x) dir/-n *");
        t.write_file(&odd, b"", 0o644).unwrap();
        assert_eq!(t.read_file(&odd).unwrap(), Some(Vec::new()));
    }

    /// The temp file gets its final mode while it is still empty, and the target path appears
    /// only with the data in it.
    #[test]
    fn mode_is_set_before_data_arrives() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let dir = Scratch::new("order");
        let path = dir.path("secret");
        let mut child = Command::new("sh")
            .args(["-c", WRITE_SCRIPT, "sh", &path, "640"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        // No data is sent yet, so the script waits in `cat`: by then the temp file must have
        // its final mode, and before that only mktemp's owner-only 0600.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let temp = loop {
            let found = std::fs::read_dir(&dir.0)
                .unwrap()
                .filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().starts_with(".xtask-write."));
            if let Some(meta) = found.as_ref().and_then(|e| e.metadata().ok()) {
                let mode = meta.permissions().mode() & 0o777;
                assert!(mode == 0o600 || mode == 0o640, "{mode:o}");
                assert_eq!(meta.len(), 0);
                if mode == 0o640 {
                    break found.unwrap().path();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no temp file with mode 640"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(!std::path::Path::new(&path).exists());
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"secret value").unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(&path).unwrap(), b"secret value");
        assert!(!temp.exists());
    }

    #[test]
    fn local_file_errors() {
        let dir = Scratch::new("errors");
        let t = Target::Local;
        assert!(t.write_file("relative/path", b"x", 0o644).is_err());
        assert!(t.write_file(&dir.path("x/"), b"x", 0o644).is_err());
        assert!(t.write_file(&dir.path("x"), b"x", 0o17777).is_err());
        let err = t
            .write_file(&dir.path(""), b"x", 0o644)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an absolute file path"), "{err}");
        std::fs::create_dir(dir.0.join("d")).unwrap();
        let err = t
            .write_file(&dir.path("d"), b"x", 0o644)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
        // A directory is not a readable file; neither is a dangling link.
        assert!(t.read_file(&dir.path("d")).is_err());
        std::os::unix::fs::symlink("/nonexistent/xtask", dir.0.join("link")).unwrap();
        assert!(t.read_file(&dir.path("link")).is_err());
    }

    #[test]
    fn local_forward_and_image_are_direct() {
        let t = Target::Local;
        assert_eq!(
            t.forward(8080).unwrap(),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        t.pipe_image("no-such-image:ever").unwrap();
        t.close().unwrap();
    }
}
