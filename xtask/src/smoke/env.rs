//! The throwaway environment of one smoke run: a private network, containers and volumes, all
//! labelled with the run's id and the process that owns it, and the sweep that removes what a
//! killed run left behind.

use std::path::PathBuf;

use anyhow::Result;

use crate::proc;

pub const RUN_LABEL: &str = "xtask.smoke";
/// `hostname:pid` of the process that owns a run, so a sweep only removes dead runs' objects.
pub const OWNER_LABEL: &str = "xtask.owner";

pub struct Env {
    pub id: String,
    pub network: String,
    /// Holds the env files (mode 0600) for this run; removed at teardown.
    pub dir: PathBuf,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl Env {
    pub fn new() -> Result<Env> {
        let rand = crate::secrets::generate(crate::model::Generate::Hex32)?;
        let id = format!("xs{}", &rand[..8]);
        let dir = std::env::temp_dir().join(format!("xtask-{id}"));
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Env {
            network: id.clone(),
            id,
            dir,
        })
    }

    /// `--label` arguments every object of this run carries.
    pub fn labels(&self) -> Vec<String> {
        vec![
            "--label".into(),
            "xtask.project=xtask".into(),
            "--label".into(),
            format!("{RUN_LABEL}={}", self.id),
            "--label".into(),
            format!("{OWNER_LABEL}={}:{}", hostname(), std::process::id()),
        ]
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.id)
    }

    pub fn create_network(&self) -> Result<()> {
        let mut cmd = proc::cmd("docker", ["network", "create"]);
        proc::shield(&mut cmd)
            .args(self.labels())
            .arg(&self.network);
        proc::run(&mut cmd, None)?;
        Ok(())
    }

    /// Removes every container, network and volume of this run. Best effort on each kind so one
    /// failure does not leave the rest behind; returns what could not be removed.
    pub fn teardown(&self) -> Vec<String> {
        let problems = remove_run(&self.id);
        let _ = std::fs::remove_dir_all(&self.dir);
        problems
    }
}

/// Removes all objects labelled with run `id`, and makes sure of it: whatever is still there
/// afterwards (a command that was cut short, say by a Ctrl-C that reached it in the instant
/// between its start and its leaving the terminal's process group) is removed again, a few
/// times, before it counts as a problem.
fn remove_run(id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        problems = remove_once(id);
        match left(id) {
            // Whatever went wrong on the way, nothing of the run is left.
            Ok(left) if left.is_empty() => return Vec::new(),
            Ok(left) => problems.push(format!("still there: {}", left.join(", "))),
            Err(e) => problems.push(format!("cannot list what is left: {e:#}")),
        }
    }
    problems
}

/// Every command here is shielded from a terminal's Ctrl-C: a second one while tearing down
/// must not cut the teardown short.
fn docker(args: &[&str]) -> std::process::Command {
    let mut cmd = proc::cmd("docker", args);
    proc::shield(&mut cmd);
    cmd
}

/// The ids a `docker ... ls`-like listing prints; a listing that fails is an error, never
/// "nothing there".
fn list(args: &[&str]) -> Result<Vec<String>> {
    Ok(proc::stdout(&mut docker(args))?
        .lines()
        .map(String::from)
        .filter(|l| !l.is_empty())
        .collect())
}

/// What of run `id` is still in the engine.
fn left(id: &str) -> Result<Vec<String>> {
    let filter = format!("label={RUN_LABEL}={id}");
    let mut out = Vec::new();
    for (kind, args) in [
        ("container", &["ps", "-aq", "--filter", &filter][..]),
        ("network", &["network", "ls", "-q", "--filter", &filter]),
        ("volume", &["volume", "ls", "-q", "--filter", &filter]),
    ] {
        out.extend(list(args)?.into_iter().map(|x| format!("{kind} {x}")));
    }
    Ok(out)
}

fn remove_once(id: &str) -> Vec<String> {
    let filter = format!("label={RUN_LABEL}={id}");
    let mut problems = Vec::new();
    match list(&["ps", "-aq", "--filter", &filter]) {
        Ok(containers) if !containers.is_empty() => {
            let mut cmd = docker(&["rm", "-f", "-v"]);
            cmd.args(&containers);
            if let Err(e) = proc::run(&mut cmd, None) {
                problems.push(format!("containers: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("containers: cannot list: {e}")),
    }
    match list(&["network", "ls", "-q", "--filter", &filter]) {
        Ok(nets) => {
            for net in nets {
                if let Err(e) = proc::run(&mut docker(&["network", "rm", &net]), None) {
                    problems.push(format!("network {net}: {e}"));
                }
            }
        }
        Err(e) => problems.push(format!("networks: cannot list: {e}")),
    }
    match list(&["volume", "ls", "-q", "--filter", &filter]) {
        Ok(volumes) if !volumes.is_empty() => {
            let mut cmd = docker(&["volume", "rm", "-f"]);
            cmd.args(&volumes);
            if let Err(e) = proc::run(&mut cmd, None) {
                problems.push(format!("volumes: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("volumes: cannot list: {e}")),
    }
    problems
}

/// Removes the objects of runs whose owning process on this machine is gone (killed with
/// SIGKILL, machine crash). Runs of live processes, and of other machines sharing the engine,
/// are left alone.
pub fn sweep() -> Vec<String> {
    let me = hostname();
    let mut dead = std::collections::BTreeSet::new();
    for kind in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
        let mut cmd = proc::cmd("docker", kind);
        cmd.args([
            "--filter",
            &format!("label={RUN_LABEL}"),
            "--format",
            &format!("{{{{.Label \"{RUN_LABEL}\"}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
        ]);
        let Ok(out) = proc::stdout(&mut cmd) else {
            continue;
        };
        for line in out.lines() {
            let Some((id, owner)) = line.split_once(' ') else {
                continue;
            };
            let Some((host, pid)) = owner.rsplit_once(':') else {
                continue;
            };
            let Ok(pid) = pid.parse::<i32>() else {
                continue;
            };
            if host == me && !alive(pid) {
                dead.insert(id.to_string());
            }
        }
    }
    let mut swept = Vec::new();
    for id in dead {
        remove_run(&id);
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("xtask-{id}")));
        swept.push(id);
    }
    swept
}

fn alive(pid: i32) -> bool {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    // Signal 0 checks existence; EPERM still means the process exists.
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}
