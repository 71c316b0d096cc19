//! Health checks of a container on a host, run from the controller: HTTP and TCP through a
//! port forwarded over the target's connection, commands through `docker exec` on the target.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::model::{Check, Health};
use crate::smoke::checks;
use crate::target::Target;

/// The remote host port a container port is published on.
fn published(target: &Target, container: &str, port: u16) -> Result<u16> {
    let out = target.run_ok(&["docker", "port", container, &format!("{port}/tcp")])?;
    out.lines()
        .filter_map(|l| l.trim().rsplit_once(':'))
        .find_map(|(_, p)| p.parse().ok())
        .with_context(|| format!("port {port} of {container} is not published"))
}

fn once(
    target: &Target,
    container: &str,
    check: &Check,
    ports: &mut BTreeMap<u16, std::net::SocketAddr>,
) -> Result<String> {
    let mut addr = |port: u16| -> Result<std::net::SocketAddr> {
        if let Some(a) = ports.get(&port) {
            return Ok(*a);
        }
        let remote = published(target, container, port)?;
        let a = target.forward(remote)?;
        ports.insert(port, a);
        Ok(a)
    };
    match check {
        // The same HTTP and TCP checks as smoke's (JSON field paths; a TCP port that Docker's
        // proxy accepts while nothing listens behind it fails), through the forwarded port.
        Check::Http(crate::model::HttpCheck { port, .. })
        | Check::Tcp(crate::model::TcpCheck { port, .. }) => {
            let ports = BTreeMap::from([(*port, addr(*port)?)]);
            let reach = checks::Target {
                container: None,
                run_prefix: Vec::new(),
                image: "",
                ports: &ports,
                limit: None,
            };
            checks::run(check, &reach, &mut BTreeMap::new())
        }
        Check::Command(c) => {
            let mut argv = vec!["docker".to_string(), "exec".into(), container.into()];
            argv.extend(c.command.iter().cloned());
            let out = target.run(&argv)?;
            let code = out.status.code().unwrap_or(-1);
            if code != c.exit_code {
                bail!("exit code {code}, expected {}", c.exit_code);
            }
            Ok(format!("exit code {code}"))
        }
        Check::PythonImport(p) => {
            let (module, attr) = p.import.split_once(':').unwrap_or((p.import.as_str(), ""));
            let out = target.run(&[
                "docker",
                "exec",
                container,
                "python3",
                "-c",
                checks::IMPORT_PROGRAM,
                module,
                attr,
            ])?;
            if !out.status.success() {
                bail!("import {} failed", p.import);
            }
            Ok(format!("import {}", p.import))
        }
        Check::Mcp(_) => bail!("MCP checks run against stdio servers, not containers on a host"),
    }
}

/// Polls until healthy, the container stops, or the deadline passes.
pub fn wait(target: &Target, container: &str, health: &Health) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(health.deadline_secs);
    let mut ports = BTreeMap::new();
    loop {
        crate::signals::check()?;
        let state = target.run_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}}",
            container,
        ])?;
        if state.trim() != "running" {
            bail!(
                "{container} stopped ({}) before it became healthy",
                state.trim()
            );
        }
        let err = match once(target, container, &health.check, &mut ports) {
            Ok(d) => return Ok(d),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("not healthy after {} s: {err:#}", health.deadline_secs);
        }
        std::thread::sleep(
            Duration::from_millis(health.interval_ms)
                .min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

/// One check now, for `status`.
pub fn probe(target: &Target, container: &str, health: &Health) -> Result<String> {
    once(target, container, &health.check, &mut BTreeMap::new())
}

pub fn logs(target: &Target, container: &str, lines: usize) -> String {
    target
        .run(&["docker", "logs", "--tail", &lines.to_string(), container])
        .map(|o| {
            crate::redact::text(&format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        })
        .unwrap_or_default()
}
