//! Carrying out a plan on a host: files, network, volumes, images, then containers in
//! dependency order. A replaced container is health-gated: the new version must be healthy
//! before the old one is gone, and if it is not, the old one keeps (or goes back to) serving.
//! A new container runs as `NAME-next` until it is healthy, the old one waits as `NAME-prev`,
//! so `NAME` always names a version that passed its check, and `repair` can tell what a killed
//! run left.

use anyhow::{bail, Context, Result};

use super::desired::*;
use super::health;
use super::observe::Actual;
use super::plan::{Action, Kind, Plan};
use crate::model::Model;
use crate::target::Target;
use crate::ui::Progress;

pub struct Ctx<'a> {
    pub model: &'a Model,
    pub host: &'a str,
    pub target: &'a Target,
    pub progress: &'a Progress,
}

fn labels(ctx: &Ctx<'_>, c: &DesiredContainer, previous: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in [
        ("xtask.project", "xtask".to_string()),
        (HOST_LABEL, ctx.host.to_string()),
        (SERVICE_LABEL, c.service.clone()),
        (HASH_LABEL, c.hash.clone()),
        (IMAGE_HASH_LABEL, c.image_hash.clone()),
        (ENV_HASH_LABEL, c.env_hash.clone()),
        (RUN_HASH_LABEL, c.run_hash.clone()),
        (PREVIOUS_LABEL, previous.to_string()),
    ] {
        out.push("--label".into());
        out.push(format!("{k}={v}"));
    }
    out
}

/// `docker run` argv for a container. `probe` publishes the ports on random loopback ports
/// instead of the real ones, for a candidate checked beside the running version.
fn run_argv(
    ctx: &Ctx<'_>,
    c: &DesiredContainer,
    name: &str,
    env_path: &str,
    previous: &str,
    probe: bool,
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "docker".into(),
        "run".into(),
        "--detach".into(),
        "--name".into(),
        name.into(),
    ];
    argv.extend(["--network".into(), network_name(ctx.host)]);
    if !probe {
        argv.extend([
            "--network-alias".into(),
            c.service.clone(),
            "--restart".into(),
            "unless-stopped".into(),
        ]);
    }
    argv.extend(labels(ctx, c, previous));
    // Secrets travel in the env file on the host, never on this command line.
    argv.extend(["--env-file".into(), env_path.into()]);
    for (cport, hport) in &c.ports {
        match (probe, hport) {
            (false, Some(h)) => argv.extend(["--publish".into(), format!("{h}:{cport}")]),
            _ => argv.extend(["--publish".into(), format!("127.0.0.1::{cport}")]),
        }
    }
    if !probe {
        for (vol, target) in &c.volumes {
            argv.extend(["--volume".into(), format!("{vol}:{target}")]);
        }
    }
    if let Some(w) = &c.workdir {
        argv.extend(["--workdir".into(), w.clone()]);
    }
    argv.push(c.image.clone());
    argv.extend(c.command.iter().cloned());
    argv
}

fn rm(ctx: &Ctx<'_>, name: &str) {
    let _ = ctx.target.run(&["docker", "rm", "-f", name]);
}

/// Puts back what an interrupted run left. A new version runs as `NAME-next` until it is
/// healthy, and the old one steps aside as `NAME-prev` until then, so `NAME` is always a
/// version that passed its health check. A `-next` is removed (first: it may hold the ports);
/// a `-prev` whose main container is missing is the last good version and is restored, other
/// `-prev` containers are removed.
pub fn repair(ctx: &Ctx<'_>, actual: &Actual) -> Result<bool> {
    let mut repaired = false;
    for a in actual
        .containers
        .iter()
        .filter(|a| a.name.ends_with("-next"))
    {
        ctx.progress.line(&format!(
            "removing {} (an unverified new version left by an interrupted run)",
            a.name
        ));
        rm(ctx, &a.name);
        repaired = true;
    }
    for a in &actual.containers {
        let Some(main) = a.name.strip_suffix("-prev") else {
            continue;
        };
        if actual.containers.iter().any(|c| c.name == main) {
            rm(ctx, &a.name);
        } else {
            ctx.progress
                .line(&format!("restoring {main} from an interrupted replace"));
            ctx.target.run_ok(&["docker", "rename", &a.name, main])?;
            ctx.target.run_ok(&["docker", "start", main])?;
        }
        repaired = true;
    }
    Ok(repaired)
}

pub fn apply(
    ctx: &Ctx<'_>,
    desired: &Desired,
    actual: &Actual,
    plan: &Plan,
    root: &str,
) -> Result<()> {
    // Files first: containers read their env files when they start.
    let mut changed = Vec::new();
    for item in plan
        .items
        .iter()
        .filter(|i| i.kind == Kind::File && i.action != Action::Unchanged)
    {
        let f = desired
            .files
            .iter()
            .find(|f| f.path == item.name)
            .expect("planned from desired");
        if f.what == super::clients::MCP_CONFIG {
            super::clients::backup(&f.path)?;
        }
        ctx.target
            .write_file(&f.path, &f.content, f.mode)
            .with_context(|| format!("write {}", f.path))?;
        ctx.progress.line(&format!("wrote {} ({})", f.path, f.what));
        changed.push(f);
    }
    let host = ctx
        .model
        .hosts
        .iter()
        .find(|h| h.name == ctx.host)
        .expect("host of the plan");
    super::integrate::apply(ctx, &changed, host)?;
    for item in &plan.items {
        if let (kind @ (Kind::Network | Kind::Volume), Action::Create) = (item.kind, &item.action) {
            let what = if kind == Kind::Network {
                "network"
            } else {
                "volume"
            };
            let argv = [
                "docker".to_string(),
                what.into(),
                "create".into(),
                "--label".into(),
                "xtask.project=xtask".into(),
                "--label".into(),
                format!("{HOST_LABEL}={}", ctx.host),
                item.name.clone(),
            ];
            ctx.target.run_ok(&argv)?;
        }
    }
    for c in &desired.containers {
        let item = plan
            .items
            .iter()
            .find(|i| i.kind == Kind::Container && i.name == c.name)
            .expect("planned");
        match &item.action {
            Action::Unchanged | Action::Remove(_) => continue,
            Action::Create | Action::Replace(_) => {}
        }
        crate::signals::check()?;
        ensure_image(ctx, &c.image)?;
        let svc = ctx.model.service(&c.service).expect("desired from model");
        let h = svc
            .spec
            .health
            .as_ref()
            .context("validated: containers have health")?;
        let env_path = env_path(root, &c.service);
        match &item.action {
            Action::Create => {
                // Under the `-next` name until healthy: a run killed before then leaves a
                // container that the next run removes, never one that looks deployed.
                let next_name = format!("{}-next", c.name);
                rm(ctx, &next_name);
                let started = ctx
                    .target
                    .run_ok(&run_argv(ctx, c, &next_name, &env_path, "", false));
                if let Err(e) = started.and_then(|_| health::wait(ctx.target, &next_name, h)) {
                    let logs = health::logs(ctx.target, &next_name, 20);
                    rm(ctx, &next_name);
                    bail!(
                        "`{}` did not become healthy: {e:#}\n--- last log lines ---\n{logs}",
                        c.service
                    );
                }
                ctx.target
                    .run_ok(&["docker", "rename", &next_name, &c.name])?;
                ctx.progress.line(&format!("started {} (healthy)", c.name));
            }
            Action::Replace(why) => replace(ctx, c, &env_path, h, actual, why)?,
            _ => {}
        }
    }
    for item in &plan.items {
        if let (Kind::Container, Action::Remove(why)) = (item.kind, &item.action) {
            rm(ctx, &item.name);
            ctx.progress.line(&format!("removed {} ({why})", item.name));
        }
    }
    Ok(())
}

/// Makes the image present on the target: on a remote host, shipped with `docker save | docker
/// load` when missing.
fn ensure_image(ctx: &Ctx<'_>, image: &str) -> Result<()> {
    let present = ctx
        .target
        .run(&["docker", "image", "inspect", "--format", "{{.Id}}", image])?;
    if present.status.success() {
        return Ok(());
    }
    ctx.progress.line(&format!(
        "shipping image {} to the host",
        &image[..image.len().min(19)]
    ));
    ctx.target.pipe_image(image)
}

fn replace(
    ctx: &Ctx<'_>,
    c: &DesiredContainer,
    env_path: &str,
    h: &crate::model::Health,
    actual: &Actual,
    why: &str,
) -> Result<()> {
    let old = actual
        .containers
        .iter()
        .find(|a| a.name == c.name)
        .expect("replace has an old one");
    let prev_name = format!("{}-prev", c.name);
    let next_name = format!("{}-next", c.name);
    let previous_image = old.image.clone();
    ctx.progress.line(&format!("replacing {} ({why})", c.name));

    // A stateless service is first proven beside the running version, on loopback ports, so
    // a broken version never takes the real port. (A service with volumes is not: two
    // database servers on one data directory would corrupt it.)
    if !c.has_volumes {
        rm(ctx, &next_name);
        ctx.target.run_ok(&run_argv(
            ctx,
            c,
            &next_name,
            env_path,
            &previous_image,
            true,
        ))?;
        let res = health::wait(ctx.target, &next_name, h);
        if let Err(e) = res {
            let logs = health::logs(ctx.target, &next_name, 20);
            rm(ctx, &next_name);
            bail!(
                "the new version of `{}` is not healthy: {e:#}; the old one keeps serving\n--- last log lines of the new version ---\n{logs}",
                c.service
            );
        }
        rm(ctx, &next_name);
    }

    // The switch: the old container steps aside (kept, stopped, until the new one is
    // healthy), the new one takes the ports under the `-next` name and takes the real name
    // only once healthy.
    ctx.target
        .run_ok(&["docker", "rename", &c.name, &prev_name])?;
    let switch = std::time::Instant::now();
    let healthy = ctx
        .target
        .run_ok(&["docker", "stop", "-t", "10", &prev_name])
        .and_then(|_| {
            rm(ctx, &next_name);
            ctx.target.run_ok(&run_argv(
                ctx,
                c,
                &next_name,
                env_path,
                &previous_image,
                false,
            ))
        })
        .and_then(|_| health::wait(ctx.target, &next_name, h));
    match healthy {
        Ok(_) => {
            ctx.target
                .run_ok(&["docker", "rename", &next_name, &c.name])?;
            rm(ctx, &prev_name);
            ctx.progress.line(&format!(
                "replaced {} (healthy; its ports were unanswered for {:.1}s)",
                c.name,
                switch.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Err(e) => {
            let logs = health::logs(ctx.target, &next_name, 20);
            rm(ctx, &next_name);
            ctx.target
                .run_ok(&["docker", "rename", &prev_name, &c.name])?;
            ctx.target.run_ok(&["docker", "start", &c.name])?;
            bail!(
                "the new version of `{}` is not healthy: {e:#}; the previous version is back\n--- last log lines of the new version ---\n{logs}",
                c.service
            )
        }
    }
}
