//! One `up` (or `down`) at a time per host: a lock on the host, a symbolic link whose target
//! names who holds it (`HOSTNAME:PID` of the run). Making a symbolic link is atomic and fails
//! when the name exists, so taking the lock and saying who took it are one step: there is no
//! moment when the lock exists without an owner. Each attempt is one round trip.
//!
//! A lock held by a run of this machine that is gone (killed) is broken; one held by a live run,
//! or by a run on another machine (whose liveness cannot be seen from here), makes the next
//! wait, or fail at once with `--no-wait`.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::target::Target;

/// The lock's name under the host's root.
const NAME: &str = ".xtask-lock";

/// `$1` lock path, `$2` this run's owner string, `$3` the owner of a lock to break ("" for
/// none). Prints `acquired`, or `held OWNER` (owner empty when the lock vanished in between).
///
/// Breaking moves the link aside (a rename: of two runs breaking the same lock, one moves it)
/// and checks that what it moved is the stale lock it meant to break; a live lock taken in
/// between is put back (`ln -s` again fails if yet another run took the lock meanwhile).
const SCRIPT: &str = r#"set -u
lock=$1; me=$2; stale=$3
mkdir -p -- "$(dirname -- "$lock")" || exit 1
if [ -d "$lock" ] && [ ! -L "$lock" ]; then
  echo "$lock is a directory, not a lock: remove it" >&2
  exit 1
fi
if [ -n "$stale" ] && [ "$(readlink -- "$lock" 2>/dev/null)" = "$stale" ]; then
  aside="$lock.broken.$$"
  if mv -f -- "$lock" "$aside" 2>/dev/null; then
    got=$(readlink -- "$aside" 2>/dev/null)
    if [ "$got" != "$stale" ] && [ -n "$got" ]; then
      ln -s -- "$got" "$lock" 2>/dev/null
    fi
    rm -f -- "$aside"
  fi
fi
if ln -s -- "$me" "$lock" 2>/dev/null; then
  echo acquired
  exit 0
fi
printf 'held %s\n' "$(readlink -- "$lock" 2>/dev/null)"
"#;

/// Removes the lock `$1` only while it is still `$2`'s.
const RELEASE: &str = r#"if [ "$(readlink -- "$1" 2>/dev/null)" = "$2" ]; then rm -f -- "$1"; fi"#;

pub struct Lock<'t> {
    target: &'t Target,
    path: String,
    me: String,
}

fn me() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Whether the run that holds the lock is alive: `None` when it is not a run of this machine.
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
        let path = format!("{root}/{NAME}");
        let me = me();
        let mut stale = String::new();
        let mut told = String::new();
        loop {
            let out = target.run(&["sh", "-c", SCRIPT, "sh", &path, &me, &stale])?;
            if !out.status.success() {
                bail!(
                    "cannot take the lock {path} on {}: {}",
                    target.name(),
                    crate::proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
                );
            }
            let out = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out == "acquired" {
                return Ok(Lock { target, path, me });
            }
            let owner = out.strip_prefix("held").unwrap_or("").trim().to_string();
            stale.clear();
            if owner.is_empty() {
                // Released between the two looks: try again at once.
                continue;
            }
            if alive_here(&owner) == Some(false) {
                say(&format!(
                    "breaking the lock of a run that is gone ({owner})"
                ));
                stale = owner;
                continue;
            }
            if !wait {
                bail!("another `up` or `down` holds the lock on {} ({owner}); run again later, or without --no-wait to wait for it", target.name());
            }
            if told != owner {
                say(&format!(
                    "waiting for the lock held by {owner} (if that run is gone for good, remove {path} on {})",
                    target.name()
                ));
                told = owner;
            }
            std::thread::sleep(Duration::from_millis(300));
            crate::signals::check()?;
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let _ = self
            .target
            .run(&["sh", "-c", RELEASE, "sh", &self.path, &self.me]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "xtask-lock-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn hostname() -> String {
        me().rsplit_once(':').unwrap().0.to_string()
    }

    #[test]
    fn held_lock_names_its_owner_and_is_released_on_drop() {
        let dir = scratch("held");
        let root = dir.join("root").to_string_lossy().into_owned();
        let t = Target::Local;
        let lock = Lock::acquire(&t, &root, false, &|_| {}).unwrap();
        let path = dir.join("root").join(NAME);
        assert_eq!(std::fs::read_link(&path).unwrap().to_string_lossy(), me());
        // This process is alive: a second taker fails at once, naming it.
        let err = Lock::acquire(&t, &root, false, &|_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&me()), "{err}");
        drop(lock);
        assert!(path.symlink_metadata().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lock_of_a_dead_run_is_broken_and_another_machines_is_not() {
        let dir = scratch("stale");
        let root = dir.to_string_lossy().into_owned();
        let path = dir.join(NAME);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let owner = format!("{}:{dead}", hostname());
        std::os::unix::fs::symlink(&owner, &path).unwrap();
        let said = std::sync::Mutex::new(Vec::new());
        let t = Target::Local;
        let lock = Lock::acquire(&t, &root, false, &|m| {
            said.lock().unwrap().push(m.to_string())
        })
        .unwrap();
        assert!(said.lock().unwrap()[0].contains(&owner));
        assert_eq!(std::fs::read_link(&path).unwrap().to_string_lossy(), me());
        drop(lock);

        // Another machine's run: its liveness cannot be seen, so the lock holds.
        std::os::unix::fs::symlink("elsewhere.example:1", &path).unwrap();
        let err = Lock::acquire(&t, &root, false, &|_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("elsewhere.example:1"), "{err}");
        // Dropping a lock that is no longer ours leaves the new holder's lock alone.
        std::fs::remove_file(&path).unwrap();
        let lock = Lock::acquire(&t, &root, false, &|_| {}).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("elsewhere.example:2", &path).unwrap();
        drop(lock);
        assert_eq!(
            std::fs::read_link(&path).unwrap().to_string_lossy(),
            "elsewhere.example:2"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
