//! `plan|up|down|status|logs HOST`: converge one host to its descriptors, locally or over SSH.
//!
//!   descriptors -> Desired (with content hashes) -> observe the host -> Plan -> apply
//!
//! `plan` stops after the diff (exit 0: no changes, 2: changes, 1: error, as Terraform's
//! `-detailed-exitcode`); `up` applies it under a lock on the host.

mod apply;
mod clients;
pub mod desired;
mod health;
mod integrate;
mod lock;
mod observe;
mod plan;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::model::{self, Host, Model, Reach};
use crate::target::Target;
use crate::ui::Progress;
use crate::{envfile, images};

use desired::*;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Host name (hosts/NAME.toml)
    host: String,
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Host name (hosts/NAME.toml)
    host: String,
    /// Fail at once when another `up` holds the host's lock, instead of waiting
    #[arg(long)]
    no_wait: bool,
    /// Go back to the image each container ran before its last replace
    #[arg(long)]
    rollback: bool,
}

#[derive(clap::Args)]
pub struct DownArgs {
    /// Host name (hosts/NAME.toml)
    host: String,
    /// Also remove the services' volumes (their data)
    #[arg(long)]
    volumes: bool,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    host: String,
    service: String,
    /// Keep following the log
    #[arg(long, short)]
    follow: bool,
    /// Lines from the end
    #[arg(long, default_value_t = 100)]
    tail: usize,
}

fn load(root: &Path) -> Result<Option<Model>> {
    Ok(model::load_reported(root))
}

fn host<'m>(model: &'m Model, name: &str) -> Result<&'m Host> {
    model
        .hosts
        .iter()
        .find(|h| h.name == name)
        .with_context(|| {
            format!(
                "unknown host `{name}`; hosts: {}",
                model
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The target that carries out a host's plan: github-actions workflows are files written on
/// this machine (into the components' checkouts).
fn target_for(host: &Host) -> Result<Target> {
    match host.spec.reach {
        Reach::GithubActions => Ok(Target::Local),
        _ => Target::for_host(&host.spec),
    }
}

fn plannable(host: &Host) -> Result<()> {
    match host.spec.reach {
        Reach::Imported => bail!(
            "host `{}` only imports libraries: `cargo xtask libs` installs them",
            host.name
        ),
        _ => Ok(()),
    }
}

/// Desired state of any host kind, and lines to show after the plan (commands to run by hand).
fn desired_any(
    model: &Model,
    host: &Host,
    values: &std::collections::BTreeMap<(String, String), String>,
    previous: &std::collections::BTreeMap<String, String>,
) -> Result<(Desired, Vec<String>)> {
    match host.spec.reach {
        Reach::GithubActions => {
            let mut d = Desired::default();
            let cmds = clients::workflow_files(model, host, &mut d)?;
            let mut notes = Vec::new();
            if !cmds.is_empty() {
                notes.push("secrets the workflows read (values never shown; each command asks for its value):".to_string());
                notes.extend(cmds.into_iter().map(|c| format!("  {c}")));
            }
            Ok((d, notes))
        }
        _ => {
            let mut d = desired(model, host, values, previous)?;
            if host.spec.reach == Reach::Local {
                clients::mcp_file(model, host, values, &mut d)?;
            }
            Ok((d, Vec::new()))
        }
    }
}

/// The changed workflow files, as diffs against what is in the checkout now.
fn show_diffs(d: &Desired, plan: &plan::Plan) {
    for item in &plan.items {
        if item.kind != plan::Kind::File
            || item.action == plan::Action::Unchanged
            || !item.what.starts_with(clients::WORKFLOW)
        {
            continue;
        }
        let Some(f) = d.files.iter().find(|f| f.path == item.name) else {
            continue;
        };
        let old = std::fs::read_to_string(&f.path).unwrap_or_default();
        println!(
            "--- {}
{}",
            f.path,
            clients::diff(&old, &String::from_utf8_lossy(&f.content))
        );
    }
}

fn machine(host: &Host) -> Result<()> {
    match host.spec.reach {
        Reach::Local | Reach::Ssh => Ok(()),
        other => bail!(
            "host `{}` is reached as `{}`: plan/up for it is not supported yet",
            host.name,
            other.as_str()
        ),
    }
}

/// Everything the host should have. `previous` maps services to the image to roll back to.
fn desired(
    model: &Model,
    host: &Host,
    values: &std::collections::BTreeMap<(String, String), String>,
    previous: &std::collections::BTreeMap<String, String>,
) -> Result<Desired> {
    let services = container_services(model, host);
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let built = if names.is_empty() {
        Vec::new()
    } else {
        images::build(model, &names, false, images::default_jobs())?
    };
    let root = root_dir(model, host);
    let mut d = Desired {
        network: network_name(&host.name),
        ..Desired::default()
    };
    for s in &services {
        let image = match previous.get(&s.name) {
            Some(p) => p.clone(),
            None => built
                .iter()
                .find(|b| b.service == s.name)
                .map(|b| b.image_id.clone())
                .context("built")?,
        };
        let env = envfile::render_env(s, values)?;
        d.files.push(DesiredFile {
            path: env_path(&root, &s.name),
            content: env.clone().into_bytes(),
            mode: 0o600,
            what: format!("env file of {}", s.name),
        });
        let c = container(&host.name, s, &image, env);
        d.volumes.extend(c.volumes.iter().map(|(v, _)| v.clone()));
        d.containers.push(c);
    }
    integrate::files(model, host, &root, &mut d)?;
    Ok(d)
}

fn secret_values(
    model: &Model,
    host: &Host,
    generate: bool,
) -> Result<std::collections::BTreeMap<(String, String), String>> {
    if generate {
        envfile::ensure(model)?;
    }
    let services: Vec<&crate::model::Service> = host
        .spec
        .services
        .iter()
        .filter_map(|n| model.service(n))
        .filter(|s| s.spec.status == crate::model::Status::Active)
        .collect();
    envfile::values_for(model, &services)
}

/// The files `up` manages, and the applied copies of its integrations.
fn observed_paths(d: &Desired) -> Vec<String> {
    let mut paths: Vec<String> = d.files.iter().map(|f| f.path.clone()).collect();
    paths.extend(d.applied.values().map(|(_, copy)| copy.clone()));
    paths
}

/// The chain for Docker's published ports, when the host has firewall rules.
fn firewall_chain(host: &Host) -> Option<String> {
    (!host.spec.firewall.is_empty()).then(|| crate::render::ufw::docker_chain(host))
}

pub fn plan(root: &Path, args: &PlanArgs) -> Result<ExitCode> {
    let Some(model) = load(root)? else {
        return Ok(ExitCode::FAILURE);
    };
    let host = host(&model, &args.host)?;
    plannable(host)?;
    let target = target_for(host)?;
    let values = secret_values(&model, host, false)?;
    let (d, notes) = desired_any(&model, host, &values, &Default::default())?;
    let paths = observed_paths(&d);
    let chain = firewall_chain(host);
    let actual = observe::observe(&target, &host.name, &paths, chain.as_deref())?;
    let p = plan::diff(&d, &actual);
    println!("plan for {}:\n{p}", host.name);
    show_diffs(&d, &p);
    for n in notes {
        println!("{n}");
    }
    Ok(if p.changes() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn up(root: &Path, args: &UpArgs) -> Result<ExitCode> {
    crate::signals::install();
    let Some(model) = load(root)? else {
        return Ok(ExitCode::FAILURE);
    };
    let host = host(&model, &args.host)?;
    plannable(host)?;
    let progress = Progress::new();
    let target = target_for(host)?;
    let root_dir = root_dir(&model, host);
    let say = |m: &str| progress.line(m);
    let _lock = lock::Lock::acquire(&target, &root_dir, !args.no_wait, &say)?;
    let ctx = apply::Ctx {
        model: &model,
        host: &host.name,
        target: &target,
        progress: &progress,
    };

    let values = secret_values(&model, host, true)?;
    // One observation serves the plan; a second is made only after repairing what an
    // interrupted run left. The file paths do not depend on the images, so a rollback's
    // desired state has the same ones.
    let (mut d, mut notes) = desired_any(&model, host, &values, &Default::default())?;
    let paths = observed_paths(&d);
    let chain = firewall_chain(host);
    let mut actual = observe::observe(&target, &host.name, &paths, chain.as_deref())?;
    if apply::repair(&ctx, &actual)? {
        actual = observe::observe(&target, &host.name, &paths, chain.as_deref())?;
    }
    if args.rollback {
        let mut previous = std::collections::BTreeMap::new();
        for a in &actual.containers {
            if a.previous_image.is_empty() {
                progress.line(&format!("{}: no previous image to roll back to", a.name));
            } else {
                previous.insert(a.service.clone(), a.previous_image.clone());
            }
        }
        (d, notes) = desired_any(&model, host, &values, &previous)?;
    }
    let p = plan::diff(&d, &actual);
    println!("up {}:\n{p}", host.name);
    show_diffs(&d, &p);
    for n in &notes {
        println!("{n}");
    }
    if p.changes() == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    apply::apply(&ctx, &d, &actual, &p, &root_dir)?;
    println!("{} is up to date", host.name);
    Ok(ExitCode::SUCCESS)
}

pub fn down(root: &Path, args: &DownArgs) -> Result<ExitCode> {
    let Some(model) = load(root)? else {
        return Ok(ExitCode::FAILURE);
    };
    let host = host(&model, &args.host)?;
    machine(host)?;
    let progress = Progress::new();
    let target = Target::for_host(&host.spec)?;
    let root_dir = root_dir(&model, host);
    let say = |m: &str| progress.line(m);
    let lock = lock::Lock::acquire(&target, &root_dir, true, &say)?;
    let actual = observe::observe(&target, &host.name, &[], None)?;
    for c in &actual.containers {
        target.run_ok(&["docker", "rm", "-f", &c.name])?;
        progress.line(&format!("removed container {}", c.name));
    }
    for n in &actual.networks {
        target.run_ok(&["docker", "network", "rm", n])?;
    }
    if args.volumes {
        for v in &actual.volumes {
            target.run_ok(&["docker", "volume", "rm", v])?;
            progress.line(&format!("removed volume {v}"));
        }
    } else if !actual.volumes.is_empty() {
        progress.line(&format!(
            "kept {} volume(s) with data (remove them with --volumes)",
            actual.volumes.len()
        ));
    }
    // The env files (secrets), the rendered integrations and their applied copies, in one
    // round trip; then the folders `up` made, where nothing else is left in them.
    let services = container_services(&model, host);
    let mut paths: Vec<String> = services
        .iter()
        .map(|s| env_path(&root_dir, &s.name))
        .collect();
    paths.extend(integrate::paths(&model, host, &root_dir)?);
    for line in integrate::remove(host, &paths, &target)? {
        progress.line(&line);
    }
    let mut rmdir = vec!["rmdir".to_string()];
    rmdir.extend(services.iter().map(|s| format!("{root_dir}/{}", s.name)));
    rmdir.extend(["rendered", "bin"].map(|d| format!("{root_dir}/{d}")));
    let _ = target.run(&rmdir);
    if host.spec.reach == Reach::Local {
        if let Some(msg) = clients::mcp_remove(&model, host)? {
            progress.line(&msg);
        }
    }
    drop(lock);
    println!("{} is down", host.name);
    Ok(ExitCode::SUCCESS)
}

/// The revision an image was built from, from its tags `xtask/SERVICE:REV`. Not from the
/// image's label: an image is reused for every revision with the same content, and only the
/// tags follow that. Several tags (equal content) show as the first and how many more.
fn revision_of(target: &Target, service: &str, image: &str) -> String {
    if image.is_empty() {
        return "-".into();
    }
    let tags = target
        .run_ok(&[
            "docker",
            "image",
            "inspect",
            "--format",
            "{{range .RepoTags}}{{.}}\n{{end}}",
            image,
        ])
        .unwrap_or_default();
    let prefix = format!("xtask/{service}:");
    let mut revs: Vec<&str> = tags
        .lines()
        .filter_map(|t| t.strip_prefix(&prefix))
        .collect();
    revs.sort_unstable();
    match revs.as_slice() {
        [] => "-".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    }
}

pub fn status(root: &Path, host_name: &str) -> Result<ExitCode> {
    let Some(model) = load(root)? else {
        return Ok(ExitCode::FAILURE);
    };
    let host = host(&model, host_name)?;
    machine(host)?;
    let target = Target::for_host(&host.spec)?;
    let actual = observe::observe(&target, &host.name, &[], None)?;
    println!(
        "{:28} {:10} {:30} {:20} uptime",
        "service", "state", "health", "revision"
    );
    for s in container_services(&model, host) {
        let name = container_name(&host.name, &s.name);
        let Some(a) = actual.containers.iter().find(|c| c.name == name) else {
            println!("{:28} {:10} {:30} {:20} -", s.name, "absent", "-", "-");
            continue;
        };
        let info = target
            .run_ok(&[
                "docker",
                "inspect",
                "--format",
                "{{.Image}}\t{{.State.StartedAt}}",
                &name,
            ])
            .unwrap_or_default();
        let (image, started) = info.trim().split_once('\t').unwrap_or(("", ""));
        let rev = revision_of(&target, &s.name, image);
        let health = match (&s.spec.health, a.running) {
            (Some(h), true) => match health::probe(&target, &name, h) {
                Ok(_) => "healthy".to_string(),
                Err(e) => format!(
                    "unhealthy: {}",
                    format!("{e:#}").chars().take(20).collect::<String>()
                ),
            },
            _ => "-".into(),
        };
        let state = if a.running { "running" } else { "stopped" };
        println!(
            "{:28} {:10} {:30} {:20} {}",
            s.name,
            state,
            health,
            rev,
            uptime(started)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-26T21:00:00.123Z` -> "5m" style, from the host's clock reading.
fn uptime(started: &str) -> String {
    let Some(secs) = parse_rfc3339(started) else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let d = (now - secs).max(0);
    match d {
        0..=119 => format!("{d}s"),
        120..=7199 => format!("{}m", d / 60),
        7200..=172_799 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86_400),
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let t = time.trim_end_matches('Z');
    let t = t.split(['+', '.']).next()?;
    let mut tt = t.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (tt.next()?.ok()?, tt.next()?.ok()?, tt.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

pub fn logs(root: &Path, args: &LogsArgs) -> Result<ExitCode> {
    let Some(model) = load(root)? else {
        return Ok(ExitCode::FAILURE);
    };
    let host = host(&model, &args.host)?;
    machine(host)?;
    if model.service(&args.service).is_none() || !host.spec.services.contains(&args.service) {
        bail!("host `{}` runs no service `{}`", host.name, args.service);
    }
    let target = Target::for_host(&host.spec)?;
    let name = container_name(&host.name, &args.service);
    let mut argv = vec![
        "docker".to_string(),
        "logs".into(),
        "--tail".into(),
        args.tail.to_string(),
    ];
    if args.follow {
        argv.push("--follow".into());
    }
    argv.push(name);
    let code = target.stream(&argv, &|line| println!("{}", crate::redact::text(line)))?;
    Ok(if code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_seconds() {
        assert_eq!(super::parse_rfc3339("1970-01-02T00:00:01.5Z"), Some(86_401));
        assert_eq!(
            super::parse_rfc3339("2000-03-01T00:00:00Z"),
            Some(951_868_800)
        );
    }
}
