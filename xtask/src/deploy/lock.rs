//! One `up` at a time per host: a lock directory on the host (mkdir is atomic everywhere),
//! holding who took it. A lock left by a killed run of this machine is broken; one held by a
//! live run makes the next wait, or fail with `--no-wait`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::target::Target;

pub struct Lock<'t> {
    target: &'t Target,
    dir: String,
}

fn me() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

fn alive_here(owner: &str) -> Option<bool> {
    let (host, pid) = owner.trim().rsplit_once(':')?;
    let mine = me();
    let (my_host, _) = mine.rsplit_once(':')?;
    if host != my_host {
        return None;
    }
    let pid: i32 = pid.parse().ok()?;
    Some(
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(e) => e == nix::errno::Errno::EPERM,
        },
    )
}

impl<'t> Lock<'t> {
    pub fn acquire(
        target: &'t Target,
        root: &str,
        wait: bool,
        say: &dyn Fn(&str),
    ) -> Result<Lock<'t>> {
        let dir = format!("{root}/.xtask-lock");
        let owner_file = format!("{dir}/owner");
        let started = Instant::now();
        let mut told = false;
        loop {
            target.run_ok(&["mkdir", "-p", root])?;
            let made = target.run(&["mkdir", &dir])?;
            if made.status.success() {
                target.write_file(&owner_file, me().as_bytes(), 0o644)?;
                return Ok(Lock { target, dir });
            }
            let owner = target
                .read_file(&owner_file)?
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            if alive_here(&owner) == Some(false) {
                say(&format!(
                    "breaking the lock of a run that is gone ({owner})"
                ));
                target.run(&["rm", "-rf", &dir])?;
                continue;
            }
            if owner.is_empty() && started.elapsed() > Duration::from_secs(10) {
                // Taken but never written: the taker died between mkdir and write.
                say("breaking a lock without an owner");
                target.run(&["rm", "-rf", &dir])?;
                continue;
            }
            if !wait {
                bail!("another `up` holds the lock on this host ({owner}); run again later, or without --no-wait to wait for it");
            }
            if !told {
                say(&format!("waiting for the lock held by {owner} ..."));
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
            crate::signals::check()?;
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let _ = self.target.run(&["rm", "-rf", &self.dir]);
    }
}
