//! Running programs: always an argv, never a string handed to a shell, and a failure that says
//! which command failed and what it printed.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `program arg arg` for messages. Arguments are shown as given; callers never put secret
/// values on a command line (they travel in env files), so there is nothing to hide here.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// The last `n` non-empty lines of some output.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // Program output is where a secret would leak from (a command echoing its env).
    crate::redact::text(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// Runs to completion, feeding `stdin` if given; fails unless the exit code is 0.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    let out = output(cmd, stdin)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            display(cmd),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 15)
        );
    }
    Ok(out)
}

/// Runs to completion and returns the output whatever the exit code.
pub fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd.get_program().to_string_lossy()))?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // Write from a thread: a child that fills its stdout before reading all of stdin
        // would otherwise deadlock against us.
        let data = data.to_vec();
        let writer = std::thread::spawn(move || pipe.write_all(&data));
        let out = child.wait_with_output()?;
        // A child may exit without reading everything (that is its answer, not our error).
        let _ = writer.join();
        return Ok(out);
    }
    Ok(child.wait_with_output()?)
}

/// Like [`output`] without stdin, but gives up after `limit`: the program is killed and the
/// answer is an error naming it. For checks that must not outlast a deadline.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd.get_program().to_string_lossy()))?;
    // Read both pipes from threads so a chatty program never blocks on a full pipe.
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{}` did not finish within {:.1} s",
                display(cmd),
                limit.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Puts `cmd` in a process group of its own, out of reach of the Ctrl-C a terminal sends to
/// its whole foreground group. For the short commands that make and remove a smoke run's
/// objects: the tool notices the signal itself and tears down, and a `docker rm` killed half
/// way would leave the network and volumes of the run behind.
pub fn shield(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// Runs and returns trimmed stdout.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = run(cmd, None)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}
