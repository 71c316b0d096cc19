//! `cargo xtask build`: each container service's image from its vendored Dockerfile and its
//! source, cached by content, tagged by the source's git revision, independent images built in
//! parallel.

pub mod base;
mod context;
mod wheelhouse;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::model::{self, Model, Service, Status};
use crate::ui::Progress;
use crate::{docker, git, proc};

pub const HASH_LABEL: &str = "xtask.hash";

#[derive(clap::Args)]
pub struct Args {
    /// Services to build (default: every active service with an [image])
    services: Vec<String>,
    /// Make the base images anew even when present
    #[arg(long)]
    base: bool,
    /// Builds at once (default: the number of cores)
    #[arg(long, short)]
    jobs: Option<usize>,
}

/// What `build` did for one service.
#[derive(Debug, Clone)]
pub struct Built {
    pub service: String,
    pub image_id: String,
    /// False when an image with the same content hash already existed.
    pub ran_build: bool,
}

pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    let started = Instant::now();
    let built = build(&model, &args.services, args.base, jobs)?;
    let ran = built.iter().filter(|b| b.ran_build).count();
    println!(
        "{} image{} ready, {ran} built, {} cached, in {:.1}s",
        built.len(),
        if built.len() == 1 { "" } else { "s" },
        built.len() - ran,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The services `names` selects (all buildable ones when empty).
pub fn select<'m>(model: &'m Model, names: &[String]) -> Result<Vec<&'m Service>> {
    if names.is_empty() {
        return Ok(model
            .services
            .iter()
            .filter(|s| s.spec.status == Status::Active && s.spec.image.is_some())
            .collect());
    }
    let mut out = Vec::new();
    for name in names {
        let Some(s) = model.service(name) else {
            bail!(
                "unknown service `{name}`; services with an image: {}",
                model
                    .services
                    .iter()
                    .filter(|s| s.spec.image.is_some())
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if s.spec.status != Status::Active {
            bail!(
                "service `{name}` is {}: nothing to build yet",
                s.spec.status.as_str()
            );
        }
        if s.spec.image.is_none() {
            bail!("service `{name}` has no [image] to build");
        }
        out.push(s);
    }
    Ok(out)
}

/// Where a service's code is on this machine.
pub fn source_dir(model: &Model, s: &Service) -> Result<PathBuf> {
    match &s.spec.source {
        None => Ok(s.dir.clone()),
        Some(src) => match (&src.path, &src.git) {
            (Some(p), _) => Ok(model.root.join(p)),
            (None, Some(git)) => {
                let dir = crate::sources::checkout_dir(&model.root, &s.name);
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    bail!(
                        "the source of `{}` ({git}) is not fetched; run `cargo xtask sources` (offline? map the remote to a local repository with a mirror, see `cargo xtask sources --help`)",
                        s.name
                    )
                }
            }
            (None, None) => unreachable!("validated: a source has git or path"),
        },
    }
}

struct Job {
    service: String,
    reference: String,
    args: BTreeMap<String, String>,
    tar: Vec<u8>,
    labels: Vec<(String, String)>,
    /// `docker build --network`: `none` for a wheelhouse build.
    network: Option<String>,
}

enum Prepared {
    Cached(Built),
    Build(Job),
}

/// The build context of one service and whether an image of it exists (then it is tagged with
/// this revision and nothing is built).
fn prepare(
    model: &Model,
    s: &Service,
    src: &Path,
    base_ids: &BTreeMap<String, String>,
    wheels: bool,
    existing: &[(String, String, Vec<String>)],
    progress: &Progress,
) -> Result<Prepared> {
    let image = s.spec.image.as_ref().expect("selected");
    let ctx_dir = match &image.context {
        Some(c) => src.join(c),
        None => src.to_path_buf(),
    };
    if !ctx_dir.is_dir() {
        bail!(
            "`{}`: build context {} does not exist",
            s.name,
            ctx_dir.display()
        );
    }
    let mut args = image.args.clone();
    args.insert("BASE_IMAGE".into(), image.base.clone());
    // The descriptor describes the image rather than being part of it: editing a check
    // must not rebuild an image whose context is the service's own directory.
    let leave_out: &[&str] = if ctx_dir == s.dir {
        &["service.toml"]
    } else {
        &[]
    };
    let path = s.dir.join(&image.dockerfile);
    let mut dockerfile =
        std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut extra = Vec::new();
    if wheels {
        extra = wheelhouse::make(&model.root, &s.name, &ctx_dir, &|m| progress.line(m))?;
        dockerfile = wheelhouse::dockerfile(&String::from_utf8_lossy(&dockerfile)).into_bytes();
    }
    let ctx = context::assemble(
        &dockerfile,
        &ctx_dir,
        leave_out,
        &extra,
        &args,
        &base_ids[&image.base],
    )
    .with_context(|| format!("`{}`: assemble the build context", s.name))?;
    let rev = git::revision(src);
    let reference = format!("xtask/{}:{}", s.name, rev.tag(&ctx.hash));
    if let Some((id, _, tags)) = existing.iter().find(|(_, h, _)| *h == ctx.hash) {
        if !tags.contains(&reference) {
            docker::tag(id, &reference)?;
        }
        progress.line(&format!("{}: cached {reference}", s.name));
        return Ok(Prepared::Cached(Built {
            service: s.name.clone(),
            image_id: id.clone(),
            ran_build: false,
        }));
    }
    let labels = vec![
        ("xtask.project".to_string(), "xtask".to_string()),
        ("xtask.service".to_string(), s.name.clone()),
        (HASH_LABEL.to_string(), ctx.hash),
        ("xtask.revision".to_string(), rev.short.clone()),
        ("xtask.dirty".to_string(), rev.dirty.to_string()),
        ("xtask.wheelhouse".to_string(), wheels.to_string()),
    ];
    Ok(Prepared::Build(Job {
        service: s.name.clone(),
        reference,
        args,
        tar: ctx.tar,
        labels,
        network: wheels.then(|| "none".to_string()),
    }))
}

/// Builds (or finds) the images of `names`; returns one `Built` per service.
pub fn build(
    model: &Model,
    names: &[String],
    rebuild_base: bool,
    jobs: usize,
) -> Result<Vec<Built>> {
    let services = select(model, names)?;
    let progress = Progress::new();
    // Sources first: a git source is fetched (or found in the cache) at its pin, and one that
    // cannot be fetched fails the whole at once, naming it and how to set a mirror, before
    // minutes of base making.
    let git_sourced: Vec<String> = services
        .iter()
        .filter(|s| {
            s.spec
                .source
                .as_ref()
                .is_some_and(|src| src.path.is_none() && src.git.is_some())
        })
        .map(|s| s.name.clone())
        .collect();
    if !git_sourced.is_empty() {
        crate::sources::sync(model, &git_sourced, &progress)?;
    }
    let sources: Vec<PathBuf> = services
        .iter()
        .map(|s| source_dir(model, s))
        .collect::<Result<_>>()?;

    // Bases first: every build needs its base's id for the content hash.
    let bases: BTreeSet<&str> = services
        .iter()
        .map(|s| s.spec.image.as_ref().expect("selected").base.as_str())
        .collect();
    let mut base_ids = BTreeMap::new();
    for b in bases {
        let log = |m: &str| progress.line(m);
        base_ids.insert(b.to_string(), base::ensure(b, rebuild_base, &log)?);
    }

    let existing = docker::images_with_label(HASH_LABEL)?;
    let forced = wheelhouse::forced()?;
    let network = wheelhouse::build_network()?;
    let mut jobs_todo = Vec::new();
    let mut done = Vec::new();
    let mut misses = Vec::new();
    for (s, src) in services.iter().zip(&sources) {
        match prepare(
            model,
            s,
            src,
            &base_ids,
            forced == Some(true),
            &existing,
            &progress,
        )? {
            Prepared::Cached(b) => done.push(b),
            Prepared::Build(job) => misses.push((s, src, job)),
        }
    }
    // Whether builds reach the package index is asked only when something must be built, of
    // one container, once; where they do not, the builds use a wheelhouse made on the host.
    let offline = match (forced, misses.first()) {
        (None, Some((s, _, _))) => {
            let base = &s.spec.image.as_ref().expect("selected").base;
            let reachable = wheelhouse::index_reachable(base, network.as_deref());
            if !reachable {
                progress.line(&format!(
                    "build containers do not reach the package index here: building from a wheelhouse made on this machine (set {}=0 to never do so)",
                    wheelhouse::ENV
                ));
            }
            !reachable
        }
        _ => false,
    };
    for (s, src, mut job) in misses {
        if !offline {
            // A wheelhouse build (forced) keeps its `none`.
            if job.network.is_none() {
                job.network = network.clone();
            }
            jobs_todo.push(job);
            continue;
        }
        match prepare(model, s, src, &base_ids, true, &existing, &progress)? {
            Prepared::Cached(b) => done.push(b),
            Prepared::Build(job) => jobs_todo.push(job),
        }
    }

    let queue = Arc::new(Mutex::new(jobs_todo));
    let results = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let queue = Arc::clone(&queue);
            let results = Arc::clone(&results);
            let progress = &progress;
            scope.spawn(move || loop {
                let Some(job) = queue.lock().unwrap().pop() else {
                    break;
                };
                let r = run_build(&job, progress);
                results.lock().unwrap().push((job, r));
            });
        }
    });
    let mut failures = Vec::new();
    for (job, r) in Arc::into_inner(results).unwrap().into_inner().unwrap() {
        match r {
            Ok(id) => done.push(Built {
                service: job.service,
                image_id: id,
                ran_build: true,
            }),
            Err(e) => failures.push(format!("{}: {e:#}", job.service)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} image build{} failed:\n{}",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" },
            failures.join("\n\n")
        );
    }
    done.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(done)
}

/// One `docker build` fed the context on stdin, its output followed line by line.
fn run_build(job: &Job, progress: &Progress) -> Result<String> {
    let started = Instant::now();
    let bar = progress.task(&job.service, "building");
    let mut cmd = Command::new("docker");
    // The classic builder: no BuildKit (no buildx plugin on such machines), never pulls a base
    // that exists locally, and prints one `Step N/M` line per instruction.
    cmd.env("DOCKER_BUILDKIT", "0");
    cmd.args([
        "build",
        "--force-rm",
        "--file",
        context::DOCKERFILE,
        "--tag",
        &job.reference,
    ]);
    for (k, v) in &job.args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    for (k, v) in &job.labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    if let Some(n) = &job.network {
        // A wheelhouse build gets `none`: everything it installs is in the context, and no
        // network proves that.
        cmd.args(["--network", n]);
    }
    cmd.arg("-");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("start docker build")?;
    let mut stdin = child.stdin.take().expect("piped");
    let tar = job.tar.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut log = String::new();
    let mut step = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.unwrap_or_default();
        if line.starts_with("Step ") {
            step = line.clone();
            bar.set(&format!(
                "{} ({:.0}s)",
                short(&line, 60),
                started.elapsed().as_secs_f64()
            ));
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait()?;
    let _ = writer.join();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        bar.finish(&format!(
            "FAILED after {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        let failed_step = if step.is_empty() {
            "before the first step".to_string()
        } else {
            step
        };
        bail!(
            "docker build failed at {failed_step}\n--- last lines of the build output ---\n{}\n{}",
            proc::tail(&log, 15),
            proc::tail(&err, 5)
        );
    }
    let id = docker::image_id(&job.reference)?.context("image missing after build")?;
    bar.finish(&format!(
        "built {} in {:.1}s",
        job.reference,
        started.elapsed().as_secs_f64()
    ));
    Ok(id)
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}
