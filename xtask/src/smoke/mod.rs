//! `cargo xtask smoke`: the ecosystem end to end in throwaway containers on the local engine,
//! every declared check run, everything torn down afterwards (also on failure and Ctrl-C; a
//! killed run's leftovers are swept by the next run).

pub mod checks;
mod env;
mod junit;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::model::{self, Check, Model, Service, ServiceKind, Status};
use crate::{images, proc, secrets, signals};

use env::Env;

#[derive(clap::Args)]
pub struct Args {
    /// Services to test, with what they depend on (default: every active service)
    services: Vec<String>,
    /// Write a JUnit XML report here
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Leave the environment up afterwards for debugging, and print how to reach it
    #[arg(long)]
    keep: bool,
}

/// The result of one check.
pub struct Outcome {
    pub service: String,
    pub check: String,
    pub passed: bool,
    pub seconds: f64,
    pub detail: String,
}

pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    signals::install();
    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    let services = select(&model, &args.services)?;
    for id in env::sweep() {
        eprintln!("swept the leftovers of killed run {id}");
    }
    let started = Instant::now();
    let env = Env::new()?;
    eprintln!("smoke run {} ({} services)", env.id, services.len());
    let mut outcomes = Vec::new();
    let result = execute(&model, &services, &env, &mut outcomes);
    let checks_done = Instant::now();

    let keep = args.keep && !signals::interrupted();
    if keep {
        eprintln!("\nkept for debugging (remove with `docker rm -f $(docker ps -aq --filter label=xtask.smoke={id})`, `docker network rm {id}`):", id = env.id);
        let _ = proc::run(
            &mut proc::cmd(
                "docker",
                [
                    "ps",
                    "--filter",
                    &format!("label=xtask.smoke={}", env.id),
                    "--format",
                    "  {{.Names}}\t{{.Ports}}",
                ],
            ),
            None,
        )
        .map(|o| eprint!("{}", String::from_utf8_lossy(&o.stdout)));
    }
    // Whether everything the run made is gone (what a message may then say).
    let removed = !keep && {
        let problems = env.teardown();
        for p in &problems {
            eprintln!("teardown: {p}");
        }
        problems.is_empty()
    };
    let cleanup = if keep {
        "the environment is kept".to_string()
    } else if removed {
        "everything this run made is removed".to_string()
    } else {
        format!(
            "some of what this run made is left (see `teardown:` above); the next smoke run sweeps it, or remove it with `docker rm -f $(docker ps -aq --filter label=xtask.smoke={})`",
            env.id
        )
    };
    let teardown_secs = checks_done.elapsed().as_secs_f64();

    if let Some(path) = &args.junit {
        std::fs::write(path, junit::render(&env.id, &outcomes))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    // Also a Ctrl-C that came after the last check, during teardown: the caller asked to stop.
    let interrupted = signals::interrupted();
    match result {
        Err(e) if interrupted => {
            eprintln!("interrupted: {e:#}; {cleanup}");
            return Ok(ExitCode::from(130));
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            println!("{passed} passed, {} failed", failed.max(1));
            return Ok(ExitCode::FAILURE);
        }
        Ok(timings) => {
            eprintln!(
                "timings: build {:.1}s, start {:.1}s, checks {:.1}s, teardown {:.1}s, total {:.1}s",
                timings.build,
                timings.start,
                timings.checks,
                teardown_secs,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    if interrupted {
        eprintln!("interrupted after the checks; {cleanup}");
        return Ok(ExitCode::from(130));
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Selected services plus everything they depend on, in start order.
fn select<'m>(model: &'m Model, names: &[String]) -> Result<Vec<&'m Service>> {
    let mut wanted: Vec<&Service> = Vec::new();
    if names.is_empty() {
        for s in &model.services {
            if s.spec.status != Status::Active {
                eprintln!("skip {} ({})", s.name, s.spec.status.as_str());
            } else if matches!(s.spec.kind, ServiceKind::Container | ServiceKind::McpStdio)
                && s.spec.image.is_some()
            {
                wanted.push(s);
            }
        }
    } else {
        for n in names {
            let s = model
                .service(n)
                .with_context(|| format!("unknown service `{n}`"))?;
            if s.spec.status != Status::Active {
                bail!(
                    "service `{n}` is {}: nothing to test yet",
                    s.spec.status.as_str()
                );
            }
            if s.spec.image.is_none() {
                bail!("service `{n}` has no [image]; smoke runs services in containers");
            }
            wanted.push(s);
        }
    }
    // Depth-first on depends_on gives a start order where dependencies come first.
    let mut order: Vec<&Service> = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit<'m>(
        model: &'m Model,
        s: &'m Service,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<&'m Service>,
    ) {
        if !seen.insert(s.name.clone()) {
            return;
        }
        for d in s.spec.run.iter().flat_map(|r| &r.depends_on) {
            if let Some(dep) = model.service(d) {
                visit(model, dep, seen, order);
            }
        }
        order.push(s);
    }
    for s in wanted {
        visit(model, s, &mut seen, &mut order);
    }
    Ok(order)
}

struct Timings {
    build: f64,
    start: f64,
    checks: f64,
}

/// One started (or startable, for MCP servers) service.
struct Running {
    container: Option<String>,
    image: String,
    run_prefix: Vec<String>,
    ports: BTreeMap<u16, SocketAddr>,
}

fn execute(
    model: &Model,
    services: &[&Service],
    env: &Env,
    outcomes: &mut Vec<Outcome>,
) -> Result<Timings> {
    let t0 = Instant::now();
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let built = images::build(model, &names, false, images::default_jobs())?;
    let image_of: BTreeMap<String, String> =
        built.into_iter().map(|b| (b.service, b.image_id)).collect();
    signals::check()?;
    let build = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    env.create_network()?;
    let values = secret_values(services)?;
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut health_outcomes = Vec::new();
    for s in services {
        signals::check()?;
        let env_file = write_env_file(env, s, &values)?;
        let mut prefix: Vec<String> = vec![
            "docker".into(),
            "run".into(),
            "--network".into(),
            env.network.clone(),
        ];
        prefix.extend(env.labels());
        prefix.extend([
            "--label".into(),
            format!("xtask.service={}", s.name),
            "--env-file".into(),
            env_file.display().to_string(),
        ]);
        let image = image_of[&s.name].clone();
        let run = s.spec.run.clone().unwrap_or_default();
        if s.spec.kind == ServiceKind::McpStdio {
            // Spawned per check by the client, like a desktop MCP client does; not a daemon.
            running.insert(
                s.name.clone(),
                Running {
                    container: None,
                    image,
                    run_prefix: prefix,
                    ports: BTreeMap::new(),
                },
            );
            continue;
        }
        let name = env.container(&s.name);
        let mut cmd: Vec<String> = prefix.clone();
        cmd.extend([
            "--detach".into(),
            "--name".into(),
            name.clone(),
            "--network-alias".into(),
            s.name.clone(),
        ]);
        for p in &run.ports {
            cmd.extend(["--publish".into(), format!("127.0.0.1::{}", p.container)]);
        }
        for v in &run.volumes {
            let vol = format!("{}-{}-{}", env.id, s.name, v.name);
            let mut create = proc::cmd("docker", ["volume", "create"]);
            proc::shield(&mut create).args(env.labels()).arg(&vol);
            proc::run(&mut create, None)?;
            cmd.extend(["--volume".into(), format!("{vol}:{}", v.target)]);
        }
        if let Some(w) = &run.workdir {
            cmd.extend(["--workdir".into(), w.clone()]);
        }
        cmd.push(image.clone());
        cmd.extend(run.command.iter().cloned());
        // Shielded: a Ctrl-C must not kill the client while the engine may still go on to make
        // the container, after teardown looked for it.
        proc::run(proc::shield(&mut proc::cmd(&cmd[0], &cmd[1..])), None)
            .with_context(|| format!("start `{}`", s.name))?;
        let ports = published_ports(
            &name,
            &run.ports.iter().map(|p| p.container).collect::<Vec<_>>(),
        )?;
        let r = Running {
            container: Some(name.clone()),
            image,
            run_prefix: prefix,
            ports,
        };
        if let Some(h) = &s.spec.health {
            let started = Instant::now();
            let res = wait_healthy(s, h, &r);
            let secs = started.elapsed().as_secs_f64();
            signals::check()?;
            let ok = res.is_ok();
            let detail = match &res {
                Ok(d) => d.clone(),
                Err(e) => format!(
                    "{e:#}\n--- last log lines of {} ---\n{}",
                    s.name,
                    logs(&name)
                ),
            };
            report(&s.name, "health", ok, secs, &detail);
            health_outcomes.push(Outcome {
                service: s.name.clone(),
                check: "health".into(),
                passed: ok,
                seconds: secs,
                detail,
            });
            if !ok {
                outcomes.append(&mut health_outcomes);
                signals::check()?;
                bail!(
                    "`{}` did not become healthy; services that depend on it were not started",
                    s.name
                );
            }
        }
        running.insert(s.name.clone(), r);
    }
    outcomes.append(&mut health_outcomes);
    let start = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    for s in services {
        let r = &running[&s.name];
        let mut vars = BTreeMap::new();
        for (i, c) in s.spec.smoke.iter().enumerate() {
            signals::check()?;
            let label = check_label(c, i);
            let target = checks::Target {
                container: r.container.as_deref(),
                run_prefix: r.run_prefix.clone(),
                image: &r.image,
                ports: &r.ports,
                limit: None,
            };
            let started = Instant::now();
            let res = checks::run(c, &target, &mut vars);
            let secs = started.elapsed().as_secs_f64();
            // A check cut short by Ctrl-C (its docker command got the signal too) is not the
            // service's failure: stop without reporting it.
            signals::check()?;
            let (ok, detail) = match res {
                Ok(d) => (true, d),
                Err(e) => {
                    let mut d = format!("{e:#}");
                    if let Some(c) = &r.container {
                        d.push_str(&format!(
                            "\n--- last log lines of {} ---\n{}",
                            s.name,
                            logs(c)
                        ));
                    }
                    (false, d)
                }
            };
            report(&s.name, &label, ok, secs, &detail);
            outcomes.push(Outcome {
                service: s.name.clone(),
                check: label,
                passed: ok,
                seconds: secs,
                detail,
            });
        }
    }
    Ok(Timings {
        build,
        start,
        checks: t2.elapsed().as_secs_f64(),
    })
}

fn check_label(c: &Check, i: usize) -> String {
    let name = match c {
        Check::Http(h) => h.name.clone(),
        Check::Tcp(t) => t.name.clone(),
        Check::Mcp(m) => m.name.clone(),
        Check::Command(x) => x.name.clone(),
        Check::PythonImport(p) => p.name.clone(),
    };
    name.unwrap_or_else(|| format!("{}-{}", c.type_name(), i + 1))
}

fn report(service: &str, check: &str, ok: bool, secs: f64, detail: &str) {
    let detail = &crate::redact::text(detail);
    let mark = if ok { "PASS" } else { "FAIL" };
    eprintln!(
        "{mark} {service}/{check} ({secs:.2}s) {}",
        detail.lines().next().unwrap_or("")
    );
    if !ok {
        for line in detail.lines().skip(1) {
            eprintln!("     {line}");
        }
    }
}

fn logs(container: &str) -> String {
    proc::output(
        &mut proc::cmd("docker", ["logs", "--tail", "20", container]),
        None,
    )
    .map(|o| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
    .unwrap_or_default()
}

/// Fresh secrets for this throwaway run; required-from-environment ones from our environment.
fn secret_values(services: &[&Service]) -> Result<BTreeMap<(String, String), String>> {
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for s in services {
        for sec in &s.spec.secrets {
            let v = match sec.generate {
                Some(kind) => secrets::generate(kind)?,
                None => match std::env::var(&sec.name) {
                    Ok(v) => v,
                    Err(_) if sec.optional => continue,
                    Err(_) => {
                        missing.push(format!(
                            "{} (for {}{})",
                            sec.name,
                            s.name,
                            sec.help
                                .as_ref()
                                .map(|h| format!(": {h}"))
                                .unwrap_or_default()
                        ));
                        continue;
                    }
                },
            };
            crate::redact::add(&v);
            values.insert((s.name.clone(), sec.name.clone()), v);
        }
    }
    if !missing.is_empty() {
        bail!(
            "secrets required from the environment are not set: {}",
            missing.join(", ")
        );
    }
    Ok(values)
}

/// The service's environment with secrets filled in, as an env file (mode 0600) so no value
/// appears on a command line or in `docker inspect` of the command.
fn write_env_file(
    env: &Env,
    s: &Service,
    values: &BTreeMap<(String, String), String>,
) -> Result<PathBuf> {
    // The same rendering as a deployed env file (and the same refusal of line breaks).
    let text = crate::envfile::render_env(s, values)?;
    let path = env.dir.join(format!("{}.env", s.name));
    write_private(&path, &text)?;
    Ok(path)
}

pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn published_ports(container: &str, ports: &[u16]) -> Result<BTreeMap<u16, SocketAddr>> {
    let mut out = BTreeMap::new();
    for &p in ports {
        let text = proc::stdout(&mut proc::cmd(
            "docker",
            ["port", container, &format!("{p}/tcp")],
        ))?;
        let addr = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .parse::<SocketAddr>()
                    .ok()
                    .filter(SocketAddr::is_ipv4)
            })
            .with_context(|| format!("port {p} of {container} is not published: {text:?}"))?;
        out.insert(p, addr);
    }
    Ok(out)
}

/// Polls the health check until it passes, the container exits, or the deadline passes.
fn wait_healthy(s: &Service, h: &model::Health, r: &Running) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(h.deadline_secs);
    let container = r.container.as_deref().expect("daemons only");
    let mut target = checks::Target {
        container: Some(container),
        run_prefix: r.run_prefix.clone(),
        image: &r.image,
        ports: &r.ports,
        limit: None,
    };
    loop {
        signals::check()?;
        // No attempt may outlast the deadline (a server that accepts and never answers would
        // otherwise hold the wait for a whole HTTP timeout past it).
        target.limit = Some(deadline.saturating_duration_since(Instant::now()));
        let state = proc::stdout(&mut proc::cmd(
            "docker",
            [
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                container,
            ],
        ))?;
        if !state.starts_with("running") {
            bail!("`{}` stopped ({state}) before it became healthy", s.name);
        }
        let err = match checks::run(&h.check, &target, &mut BTreeMap::new()) {
            Ok(d) => return Ok(d),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("not healthy after {} s: {err:#}", h.deadline_secs);
        }
        std::thread::sleep(
            Duration::from_millis(h.interval_ms)
                .min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}
