//! Component sources fetched into a cache that git ignores, checked out at their pins.
//!
//! Layout under the workspace (all inside `/.xtask/`, which the repository's .gitignore
//! ignores):
//!
//! - `.xtask/git/NAME.git`: a bare repository per component, the fetch target. Only the `git`
//!   command line fetches into it (the user's credentials, proxies and `insteadOf` apply);
//!   every branch and tag of the remote is fetched (`+refs/heads/*`, `+refs/tags/*`) and the
//!   resolved pin is kept as `refs/xtask/pin`, so a commit a branch no longer reaches stays.
//!   `xtask.url` in its config records the descriptor's URL: a changed URL starts it afresh.
//! - `.xtask/sources/NAME`: the checkout, a repository of its own with a detached HEAD at the
//!   pinned commit, `origin` set to the descriptor's URL. git2 reads and writes it; the pin
//!   comes from the bare repository by a local fetch (no network).
//!
//! When nothing needs the network, nothing touches it: a commit-id or tag pin already in the
//! cache is not fetched again; a branch pin is fetched every run unless `--offline`. A checkout
//! at its pin and clean is not touched at all. A dirty checkout, or one whose HEAD carries the
//! user's own commits (or is on a branch), is reported and left as it is.
//!
//! Interruptions: a new bare repository or checkout is made in a `.tmp-*` directory beside its
//! final place and renamed into it when complete, so a final path is either absent or whole;
//! leftovers of a killed run are removed at the start of the next (runs exclude each other with
//! a lock, so a leftover is never a live run's). Moving an existing checkout to a new pin writes
//! a marker into its `.git` first and removes it last: a marker found later means the move was
//! cut short, and the next run finishes it instead of calling the half-written tree dirty. A
//! bare repository that does not open is removed and fetched again.
//!
//! Mirrors map remote URLs to other URLs or local repositories by prefix, like git's
//! `url.<base>.insteadOf` (the longest matching prefix wins), for offline and air-gapped
//! machines: see [`MIRRORS_HELP`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use git2::build::CheckoutBuilder;
use git2::{Oid, Repository, StatusOptions};
use serde::Deserialize;

use crate::model::{self, Diagnostic, Doc, Model, Source, Status};
use crate::ui::Progress;
use crate::{proc, signals};

/// The mirror file at the workspace root.
pub const MIRRORS_FILE: &str = "mirrors.toml";
/// The environment variable that overrides the mirror file.
pub const MIRRORS_ENV: &str = "XTASK_MIRRORS";

pub const MIRRORS_HELP: &str = "\
Mirrors (offline and air-gapped machines):
  A mirror maps remote URLs to local bare repositories or other URLs by prefix, like git's
  url.<base>.insteadOf; the longest matching prefix wins. With a mirror for a remote, the
  remote itself is never contacted. Set it in `mirrors.toml` at the workspace root:

      [mirrors]
      \"https://github.com/org/\" = \"/srv/git-mirrors/org/\"

  (a relative target is relative to the workspace root), or in the environment, which then
  replaces the file (whitespace-separated FROM=TO entries):

      XTASK_MIRRORS='https://github.com/org/=/srv/git-mirrors/org/'

  https://github.com/org/repo.git is then fetched from /srv/git-mirrors/org/repo.git; make
  it with `git clone --mirror https://github.com/org/repo.git /srv/git-mirrors/org/repo.git`
  (for a remote without `.git`, a local mirror may still be named NAME.git: git tries both).";

#[derive(clap::Args)]
#[command(
    after_help = "No network here? Map remotes to local mirrors (mirrors.toml or XTASK_MIRRORS): see --help.",
    after_long_help = MIRRORS_HELP
)]
pub struct Args {
    /// Only these components (services or libs); default: all active ones with a git source
    pub names: Vec<String>,
    /// Fetch nothing: check out and report from the cache only (a branch pin stays where the
    /// cache has it)
    #[arg(long)]
    pub offline: bool,
}

/// How `sync_with` works; `Default` is what `sync` does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Never run a fetch; what is not in the cache is an error.
    pub offline: bool,
}

/// Where a git-sourced component is checked out.
pub fn checkout_dir(root: &Path, name: &str) -> PathBuf {
    root.join(".xtask/sources").join(name)
}

/// The bare repository a git-sourced component is fetched into.
pub fn cache_dir(root: &Path, name: &str) -> PathBuf {
    root.join(".xtask/git").join(format!("{name}.git"))
}

/// Where a component's code is on this machine: a path source in the workspace, or the
/// checkout of a git source (which must have been fetched).
pub fn dir_of(model: &Model, name: &str, source: &Source) -> Result<PathBuf> {
    match (&source.path, &source.git) {
        (Some(p), _) => Ok(model.root.join(p)),
        (None, Some(_)) => Ok(checkout_dir(&model.root, name)),
        (None, None) => bail!("`{name}` has an empty [source]"),
    }
}

/// What `sync` did to a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Made the checkout (there was none).
    CheckedOut,
    /// Moved a clean checkout from an earlier pin to the pin (or finished a move that an
    /// interrupted run left half done).
    Updated,
    /// At the pin and clean: nothing touched.
    Unchanged,
    /// Uncommitted changes: left exactly as it was.
    KeptDirty,
    /// HEAD carries commits the remote does not have, or is on a branch: left as it was.
    KeptOwnCommits,
}

/// What `sync` found or did for one component.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub component: String,
    /// `service` or `lib`.
    pub kind: &'static str,
    /// The pinned revision from the descriptor.
    pub rev: String,
    /// The commit the pin resolves to (full id).
    pub pin: String,
    /// The commit checked out (full id).
    pub commit: String,
    pub dirty: bool,
    /// Commits the checkout is ahead of / behind the pin.
    pub ahead: usize,
    pub behind: usize,
    /// Whether this run fetched anything.
    pub fetched: bool,
    /// Fetched (or would be) through a mirror rather than the descriptor's URL.
    pub mirrored: bool,
    pub action: Action,
}

impl SourceReport {
    /// The commit checked out, 12 digits (as image tags show it).
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }

    /// One line: pin, commit, clean or dirty, ahead/behind, fetched or not, what was done.
    pub fn line(&self) -> String {
        let position = if self.ahead == 0 && self.behind == 0 {
            "at the pin".to_string()
        } else {
            format!("{} ahead, {} behind the pin", self.ahead, self.behind)
        };
        let action = match self.action {
            Action::CheckedOut => "checked out".to_string(),
            Action::Updated => "updated to the pin".to_string(),
            Action::Unchanged => "unchanged".to_string(),
            Action::KeptDirty if self.commit == self.pin => {
                "your uncommitted changes are kept".to_string()
            }
            Action::KeptDirty => format!(
                "NOT updated to the pin ({}): uncommitted changes are never overwritten; \
                 commit, stash or discard them and run again",
                &self.pin[..12.min(self.pin.len())]
            ),
            Action::KeptOwnCommits => format!(
                "NOT moved to the pin ({}): HEAD has commits of your own or is on a branch; \
                 left as it is (`git checkout --detach refs/xtask/pin` in it to go back)",
                &self.pin[..12.min(self.pin.len())]
            ),
        };
        format!(
            "{} ({}): {} at {}, {}, {}, {}{}: {action}",
            self.component,
            self.kind,
            self.rev,
            self.short(),
            if self.dirty { "dirty" } else { "clean" },
            position,
            if self.fetched {
                "fetched"
            } else {
                "not fetched"
            },
            if self.mirrored { " (mirror)" } else { "" },
        )
    }
}

/// Everything one run did: a report per component that worked, an error per one that did not.
pub struct Synced {
    pub reports: Vec<SourceReport>,
    /// One message per failed component, naming it.
    pub errors: Vec<String>,
    /// Where the mirrors came from, when there are any.
    pub mirrors: Option<String>,
}

/// Fetches and checks out every git source (or those of `names`) at its pin. Errors of every
/// component are collected first; then the whole fails naming each.
pub fn sync(model: &Model, names: &[String], progress: &Progress) -> Result<Vec<SourceReport>> {
    sync_with(model, names, &Options::default(), progress)
}

/// [`sync`] with options.
pub fn sync_with(
    model: &Model,
    names: &[String],
    opts: &Options,
    progress: &Progress,
) -> Result<Vec<SourceReport>> {
    let synced = sync_all(model, names, opts, progress)?;
    if !synced.errors.is_empty() {
        let n = synced.errors.len();
        bail!(
            "{n} source{} failed:\n{}",
            if n == 1 { "" } else { "s" },
            condense(&synced.errors)
        );
    }
    Ok(synced.reports)
}

/// Like [`sync_with`], but the per-component errors come back instead of failing. Fails only
/// for what stops every component (a bad mirror setting, an unknown name, the lock).
pub fn sync_all(
    model: &Model,
    names: &[String],
    opts: &Options,
    progress: &Progress,
) -> Result<Synced> {
    let components = select(model, names, progress)?;
    let mirrors = Mirrors::load(&model.root)?;
    let mirrors_from = (!mirrors.rules.is_empty()).then(|| mirrors.origin.clone());
    if components.is_empty() {
        return Ok(Synced {
            reports: Vec::new(),
            errors: Vec::new(),
            mirrors: mirrors_from,
        });
    }
    let root = &model.root;
    for dir in [root.join(".xtask/git"), root.join(".xtask/sources")] {
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _lock = lock(root, progress)?;
    sweep_leftovers(root);

    let ctx = Ctx {
        root,
        mirrors: &mirrors,
        offline: opts.offline,
    };
    // Components of different repositories are independent: fetched side by side. Those of
    // one repository (two services built from one codebase) take turns, and the later ones
    // fetch from the first one's cache, so the remote is asked once.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, c) in components.iter().enumerate() {
        match groups.iter_mut().find(|g| components[g[0]].url == c.url) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut results: Vec<(usize, Result<SourceReport, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|group| {
                let (ctx, components) = (&ctx, &components);
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut via: Option<PathBuf> = None;
                    for &i in group {
                        let c = &components[i];
                        let result = ctx
                            .sync_one(c, via.as_deref())
                            .map_err(|e| format!("{e:#}"));
                        match &result {
                            Ok(report) => {
                                progress.line(&report.line());
                                // Only a cache fetched just now is as fresh as the remote.
                                if report.fetched && via.is_none() {
                                    via = Some(cache_dir(ctx.root, &c.name));
                                }
                            }
                            Err(_) => progress.line(&format!("{}: FAILED (see below)", c.name)),
                        }
                        out.push((i, result));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(&groups)
            .flat_map(|(h, group)| {
                h.join().unwrap_or_else(|_| {
                    group
                        .iter()
                        .map(|&i| (i, Err("internal error: panicked".into())))
                        .collect()
                })
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let results = results.into_iter().map(|(_, r)| r);
    let mut synced = Synced {
        reports: Vec::new(),
        errors: Vec::new(),
        mirrors: mirrors_from,
    };
    for r in results {
        match r {
            Ok(report) => synced.reports.push(report),
            Err(e) => synced.errors.push(e),
        }
    }
    Ok(synced)
}

pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    signals::install();
    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    let progress = Progress::new();
    let started = Instant::now();
    let opts = Options {
        offline: args.offline,
    };
    let synced = sync_all(&model, &args.names, &opts, &progress)?;
    if !synced.errors.is_empty() {
        progress.line(&format!("error: {}", condense(&synced.errors)));
    }
    println!(
        "{} in {:.1}s",
        summary(&synced, args.offline),
        started.elapsed().as_secs_f64()
    );
    Ok(if synced.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where the mirror advice begins in a fetch error.
const ADVICE: &str = "\n  without network access to it";
/// Where the advice's line for one repository begins.
const ADVICE_ONE: &str = "\n  then ";

/// The components' errors, one after the other; where several unreachable remotes share the
/// same mirror advice (the same owner, typically), it is given once, after them.
pub fn condense(errors: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    // (advice shared by the group, the errors without it, the errors whole)
    let mut groups: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    for e in errors {
        let Some(at) = e.find(ADVICE) else {
            out.push(e.clone());
            continue;
        };
        let (head, advice) = e.split_at(at);
        let shared = advice.split(ADVICE_ONE).next().unwrap_or(advice);
        match groups.iter_mut().find(|g| g.0 == shared) {
            Some(g) => {
                g.1.push(head);
                g.2.push(e);
            }
            None => groups.push((shared, vec![head], vec![e])),
        }
    }
    for (shared, heads, whole) in groups {
        if whole.len() == 1 {
            out.push(whole[0].to_string());
        } else {
            let shared = shared.replacen(ADVICE, "\n  without network access to them", 1);
            out.push(format!(
                "{}{shared}{ADVICE_ONE}each of these remotes is fetched from there under its own \
                 name (make each with `git clone --mirror URL` into that folder)",
                heads.join("\n")
            ));
        }
    }
    out.join("\n")
}

/// `sources: 3 components: 1 checked out, ...; 1 fetched; dirty: x; 0 failed`.
pub fn summary(synced: &Synced, offline: bool) -> String {
    let reports = &synced.reports;
    let total = reports.len() + synced.errors.len();
    if total == 0 {
        return "sources: no component has a git source".to_string();
    }
    let count = |a: Action| reports.iter().filter(|r| r.action == a).count();
    let mut parts = Vec::new();
    for (action, words) in [
        (Action::CheckedOut, "checked out"),
        (Action::Updated, "updated"),
        (Action::Unchanged, "unchanged"),
    ] {
        let n = count(action);
        if n > 0 {
            parts.push(format!("{n} {words}"));
        }
    }
    let kept = count(Action::KeptDirty) + count(Action::KeptOwnCommits);
    if kept > 0 {
        parts.push(format!("{kept} left as is"));
    }
    let fetched = reports.iter().filter(|r| r.fetched).count();
    let mut out = format!(
        "sources: {total} component{}: {}; {fetched} fetched{}",
        if total == 1 { "" } else { "s" },
        if parts.is_empty() {
            "none synced".to_string()
        } else {
            parts.join(", ")
        },
        if offline { " (--offline)" } else { "" }
    );
    let dirty: Vec<&str> = reports
        .iter()
        .filter(|r| r.dirty)
        .map(|r| r.component.as_str())
        .collect();
    if !dirty.is_empty() {
        out.push_str(&format!("; dirty: {}", dirty.join(", ")));
    }
    if let Some(from) = &synced.mirrors {
        out.push_str(&format!("; mirrors from {from}"));
    }
    out.push_str(&format!("; {} failed", synced.errors.len()));
    out
}

/// A component with a git source, as `sync` needs it.
#[derive(Debug, Clone)]
struct Component {
    name: String,
    kind: &'static str,
    /// `services/NAME/service.toml` or `libs/NAME/lib.toml`.
    descriptor: String,
    url: String,
    rev: String,
}

/// The components to sync: every active one with a git source, or those named.
fn select(model: &Model, names: &[String], progress: &Progress) -> Result<Vec<Component>> {
    let mut all: Vec<(Component, Status)> = Vec::new();
    let mut path_sourced = BTreeMap::new();
    let mut push = |name: &str,
                    kind: &'static str,
                    descriptor: String,
                    src: Option<&Source>,
                    status| {
        match src {
            Some(Source {
                git: Some(url),
                rev,
                ..
            }) => all.push((
                Component {
                    name: name.to_string(),
                    kind,
                    descriptor,
                    url: url.clone(),
                    rev: rev.clone().unwrap_or_default(),
                },
                status,
            )),
            Some(Source {
                path: Some(path), ..
            }) => {
                path_sourced.insert(name.to_string(), path.clone());
            }
            _ => {
                path_sourced.entry(name.to_string()).or_default();
            }
        }
    };
    for s in &model.services {
        push(
            &s.name,
            "service",
            format!("services/{}/service.toml", s.name),
            s.spec.source.as_ref(),
            s.spec.status,
        );
    }
    for l in &model.libs {
        push(
            &l.name,
            "lib",
            format!("libs/{}/lib.toml", l.name),
            l.spec.source.as_ref(),
            l.spec.status,
        );
    }

    let mut chosen: Vec<Component> = if names.is_empty() {
        all.iter()
            .filter(|(_, status)| *status == Status::Active)
            .map(|(c, _)| c.clone())
            .collect()
    } else {
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for n in names {
            let found: Vec<&Component> = all
                .iter()
                .filter(|(c, _)| &c.name == n)
                .map(|(c, _)| c)
                .collect();
            if found.is_empty() {
                match path_sourced.get(n) {
                    Some(path) if !path.is_empty() => progress.line(&format!(
                        "{n}: its source is the workspace directory {path}: nothing to fetch"
                    )),
                    Some(_) => progress.line(&format!("{n}: has no [source]: nothing to fetch")),
                    None => unknown.push(n.as_str()),
                }
            }
            out.extend(found.into_iter().cloned());
        }
        if !unknown.is_empty() {
            let mut known: Vec<&str> = all.iter().map(|(c, _)| c.name.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            bail!(
                "no service or library named {}; components with a git source: {}",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        out
    };
    // A service and a library of one name share a checkout: fine when they name the same
    // source, an error otherwise.
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<Component> = Vec::new();
    for c in chosen {
        match out.last() {
            Some(prev) if prev.name == c.name => {
                if prev.url != c.url || prev.rev != c.rev {
                    bail!(
                        "`{}` is a service and a library with different sources ({} and {}), \
                         but they would share the checkout .xtask/sources/{}: rename one",
                        c.name,
                        prev.descriptor,
                        c.descriptor,
                        c.name
                    );
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// How the pin was found in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinKind {
    /// A commit id: never changes.
    Commit,
    /// A tag: taken as fixed, like cargo takes tags.
    Tag,
    /// A branch (or another name): moves, so it is fetched every run unless offline.
    Branch,
}

struct Ctx<'a> {
    root: &'a Path,
    mirrors: &'a Mirrors,
    offline: bool,
}

impl Ctx<'_> {
    /// `via`: a local repository that already holds this component's remote (the cache of
    /// another component of the same repository, just synced), fetched from instead.
    fn sync_one(&self, c: &Component, via: Option<&Path>) -> Result<SourceReport> {
        if c.rev.is_empty() {
            bail!(
                "`{}` ({}): git source without a pinned `rev`",
                c.name,
                c.descriptor
            );
        }
        signals::check()?;
        let mirror = self.mirrors.rewrite(&c.url);
        let (pin, fetched) = self.cache(c, mirror.as_deref(), via)?;
        signals::check()?;
        let (action, head, dirty, ahead, behind) = self.checkout(c, pin)?;
        Ok(SourceReport {
            component: c.name.clone(),
            kind: c.kind,
            rev: c.rev.clone(),
            pin: pin.to_string(),
            commit: head.to_string(),
            dirty,
            ahead,
            behind,
            fetched,
            mirrored: mirror.is_some(),
            action,
        })
    }

    /// Makes sure the bare repository holds the pin; returns the pinned commit and whether a
    /// fetch ran.
    fn cache(
        &self,
        c: &Component,
        mirror: Option<&str>,
        via: Option<&Path>,
    ) -> Result<(Oid, bool)> {
        let bare_path = cache_dir(self.root, &c.name);
        let bare = match Repository::open_bare(&bare_path) {
            Ok(repo) => {
                let url = repo
                    .config()
                    .and_then(|cfg| cfg.get_string("xtask.url"))
                    .ok();
                if url.as_deref() == Some(c.url.as_str()) {
                    Some(repo)
                } else {
                    // Another remote: its tags and branches mean nothing for this one.
                    drop(repo);
                    remove(&bare_path)?;
                    None
                }
            }
            Err(_) if bare_path.exists() || bare_path.is_symlink() => {
                // Half made or broken: start again.
                remove(&bare_path)?;
                None
            }
            Err(_) => None,
        };

        let found = bare.as_ref().and_then(|r| resolve(r, &c.rev));
        match found {
            Some((oid, PinKind::Commit | PinKind::Tag)) => {
                set_pin(bare.as_ref().expect("found in it"), oid)?;
                return Ok((oid, false));
            }
            Some((oid, PinKind::Branch)) if self.offline => {
                set_pin(bare.as_ref().expect("found in it"), oid)?;
                return Ok((oid, false));
            }
            None if self.offline => bail!(
                "`{}` ({}): revision `{}` is not in the cache ({}) and --offline fetches \
                 nothing: run without --offline, or set a mirror (`cargo xtask sources --help`)",
                c.name,
                c.descriptor,
                c.rev,
                rel(self.root, &bare_path)
            ),
            _ => {}
        }

        let via = via.map(|p| p.to_string_lossy().into_owned());
        let from = via.as_deref().or(mirror).unwrap_or(&c.url);
        let refspecs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];
        let bare = match bare {
            Some(repo) => {
                git_fetch(&bare_path, from, &refspecs)
                    .map_err(|e| self.fetch_error(c, mirror, &e))?;
                repo
            }
            None => {
                // Made beside its place and renamed into it when whole.
                let tmp = tmp_path(&bare_path);
                let made = (|| -> Result<()> {
                    let repo = Repository::init_bare(&tmp)
                        .with_context(|| format!("create {}", tmp.display()))?;
                    repo.config()?.set_str("xtask.url", &c.url)?;
                    git_fetch(&tmp, from, &refspecs)
                        .map_err(|e| self.fetch_error(c, mirror, &e))?;
                    signals::check()?;
                    fs::rename(&tmp, &bare_path)
                        .with_context(|| format!("rename into {}", bare_path.display()))?;
                    Ok(())
                })();
                if let Err(e) = made {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e);
                }
                Repository::open_bare(&bare_path)
                    .with_context(|| format!("open {}", bare_path.display()))?
            }
        };
        let mut found = resolve(&bare, &c.rev);
        if found.is_none() && is_full_hex(&c.rev) {
            // A commit that no branch or tag reaches: servers that allow it hand it out by id.
            if git_fetch(
                &bare_path,
                from,
                &[&format!("+{}:refs/xtask/fetched", c.rev)],
            )
            .is_ok()
            {
                found = resolve(&bare, &c.rev);
            }
        }
        let Some((oid, _)) = found else {
            let via = match mirror {
                Some(m) => format!(" (fetched from its mirror {m})"),
                None => String::new(),
            };
            bail!(
                "`{}` ({}): revision `{}` does not exist in {}{via}: no commit, tag or branch \
                 of that name; fix `rev` in [source]",
                c.name,
                c.descriptor,
                c.rev,
                c.url
            );
        };
        set_pin(&bare, oid)?;
        Ok((oid, true))
    }

    /// The message for a fetch that failed: which source, what git said, how to set a mirror.
    fn fetch_error(&self, c: &Component, mirror: Option<&str>, git: &str) -> anyhow::Error {
        if signals::interrupted() {
            return anyhow!("`{}`: interrupted while fetching", c.name);
        }
        let said = indent(git, "    ");
        match mirror {
            Some(m) => anyhow!(
                "`{}` ({}): could not fetch the source from its mirror {m} (for {}, mirror \
                 set in {}):\n{said}\n  check that the mirror holds the repository, or fix \
                 the entry in {}",
                c.name,
                c.descriptor,
                c.url,
                self.mirrors.origin,
                self.mirrors.origin
            ),
            None => {
                let (prefix, rest) = url_prefix(&c.url);
                let target = "/srv/git-mirrors/";
                anyhow!(
                    "`{}` ({}): could not fetch the source from {}:\n{said}\n  \
                     without network access to it, fetch from a local copy: map the remote to \
                     a mirror in {MIRRORS_FILE} at the workspace root,\n      \
                     [mirrors]\n      \"{prefix}\" = \"{target}\"\n  \
                     or in the environment,\n      {MIRRORS_ENV}='{prefix}={target}'\n  \
                     then {} is fetched from {target}{rest} (make it with \
                     `git clone --mirror {} {target}{rest}`)",
                    c.name,
                    c.descriptor,
                    c.url,
                    c.url,
                    c.url
                )
            }
        }
    }

    /// Puts the checkout at `pin` when that loses nothing; returns what was done, the commit
    /// checked out, dirty, ahead, behind.
    fn checkout(&self, c: &Component, pin: Oid) -> Result<(Action, Oid, bool, usize, usize)> {
        let dir = checkout_dir(self.root, &c.name);
        let bare_path = cache_dir(self.root, &c.name);
        if !dir.exists() && !dir.is_symlink() {
            create_checkout(&dir, &bare_path, &c.url, pin)?;
            return Ok((Action::CheckedOut, pin, false, 0, 0));
        }
        let shown = rel(self.root, &dir);
        let repo = Repository::open(&dir).map_err(|e| {
            anyhow!(
                "`{}`: {shown} exists but is not a git checkout ({}); move it away and run again",
                c.name,
                e.message()
            )
        })?;
        if repo.is_bare() || repo.workdir().is_none() {
            bail!(
                "`{}`: {shown} is a bare repository, not a checkout; move it away and run again",
                c.name
            );
        }
        let marker = repo.path().join(MARKER);
        let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        if marker.exists() {
            // A move to a pin was cut short: the tree is ours half written, finish the move
            // (and drop the index lock the killed checkout may have left).
            let _ = fs::remove_file(repo.path().join("index.lock"));
            move_to(&repo, &bare_path, pin)?;
            return Ok((Action::Updated, pin, false, 0, 0));
        }
        let Some(head) = head.map(|h| h.id()) else {
            bail!(
                "`{}`: {shown} has no commit checked out; move it away and run again",
                c.name
            );
        };
        let dirty = is_dirty(&repo)?;
        if head == pin {
            let action = if dirty {
                Action::KeptDirty
            } else {
                Action::Unchanged
            };
            return Ok((action, head, dirty, 0, 0));
        }
        bring_pin(&repo, &bare_path, pin)?;
        let (ahead, behind) = repo
            .graph_ahead_behind(head, pin)
            .with_context(|| format!("compare {shown} with the pin"))?;
        if dirty {
            return Ok((Action::KeptDirty, head, true, ahead, behind));
        }
        // The user's own commits exist only in the checkout; commits of the remote (an
        // earlier pin) are in the cache.
        let upstream = Repository::open_bare(&bare_path)
            .ok()
            .and_then(|b| b.odb().ok().map(|o| o.exists(head)))
            .unwrap_or(false);
        let on_branch = !repo.head_detached().unwrap_or(true);
        if on_branch || !upstream {
            return Ok((Action::KeptOwnCommits, head, false, ahead, behind));
        }
        move_to(&repo, &bare_path, pin)?;
        Ok((Action::Updated, pin, false, 0, 0))
    }
}

/// In a checkout's `.git` while it moves to a pin.
const MARKER: &str = "xtask-moving";

/// What running or installing Python code writes into a source tree: not the user's changes.
const EXCLUDE: &str = "\
# cargo xtask sources: files that running or installing the code makes
__pycache__/
*.py[cod]
*.egg-info/
";

fn create_checkout(dir: &Path, bare_path: &Path, url: &str, pin: Oid) -> Result<()> {
    let tmp = tmp_path(dir);
    let made = (|| -> Result<()> {
        let repo = Repository::init(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        bring_pin(&repo, bare_path, pin)?;
        repo.remote("origin", url)?;
        let exclude = repo.path().join("info/exclude");
        fs::create_dir_all(repo.path().join("info"))?;
        let mut text = fs::read_to_string(&exclude).unwrap_or_default();
        text.push_str(EXCLUDE);
        fs::write(&exclude, text)?;
        repo.set_head_detached(pin)?;
        repo.checkout_head(Some(CheckoutBuilder::new().force()))
            .with_context(|| format!("check out {pin}"))?;
        signals::check()?;
        fs::rename(&tmp, dir).with_context(|| format!("rename into {}", dir.display()))?;
        Ok(())
    })();
    if made.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    made
}

/// Moves a clean (or half-moved) checkout to `pin`, marked while it happens.
fn move_to(repo: &Repository, bare_path: &Path, pin: Oid) -> Result<()> {
    bring_pin(repo, bare_path, pin)?;
    let marker = repo.path().join(MARKER);
    fs::write(&marker, format!("{pin}\n")).context("mark the checkout as moving")?;
    let commit = repo.find_commit(pin)?;
    repo.checkout_tree(commit.as_object(), Some(CheckoutBuilder::new().force()))
        .with_context(|| format!("check out {pin}"))?;
    repo.set_head_detached(pin)?;
    fs::remove_file(&marker).context("unmark the checkout")?;
    Ok(())
}

/// Makes `pin` present in the checkout (a local fetch from the cache, no network) and points
/// its `refs/xtask/pin` at it.
fn bring_pin(repo: &Repository, bare_path: &Path, pin: Oid) -> Result<()> {
    if repo.find_commit(pin).is_err() {
        let from = fs::canonicalize(bare_path)
            .with_context(|| format!("resolve {}", bare_path.display()))?;
        let from = from
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 path", from.display()))?;
        repo.remote_anonymous(from)?
            .fetch(&["+refs/xtask/pin:refs/xtask/pin"], None, None)
            .with_context(|| format!("copy the pin from {from}"))?;
        repo.find_commit(pin)
            .with_context(|| format!("{pin} is not in {from}"))?;
    }
    repo.reference("refs/xtask/pin", pin, true, "xtask: pin")?;
    Ok(())
}

fn set_pin(bare: &Repository, oid: Oid) -> Result<()> {
    let current = bare.refname_to_id("refs/xtask/pin").ok();
    if current != Some(oid) {
        bare.reference("refs/xtask/pin", oid, true, "xtask: pin")?;
    }
    Ok(())
}

/// Uncommitted changes, untracked files included, ignored ones not.
fn is_dirty(repo: &Repository) -> Result<bool> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    Ok(!repo.statuses(Some(&mut opts))?.is_empty())
}

/// Finds `rev` in the cache and says what kind of name it is.
fn resolve(repo: &Repository, rev: &str) -> Option<(Oid, PinKind)> {
    let commit_of = |name: &str| -> Option<Oid> {
        let obj = repo.revparse_single(name).ok()?;
        obj.peel_to_commit().ok().map(|c| c.id())
    };
    if is_full_hex(rev) {
        let oid = Oid::from_str(rev).ok()?;
        return repo
            .find_commit(oid)
            .ok()
            .map(|c| (c.id(), PinKind::Commit));
    }
    if let Some(full) = rev.strip_prefix("refs/") {
        if full.starts_with("xtask/") {
            return None;
        }
        let kind = if full.starts_with("tags/") {
            PinKind::Tag
        } else {
            PinKind::Branch
        };
        return commit_of(rev).map(|id| (id, kind));
    }
    if let Some(id) = commit_of(&format!("refs/tags/{rev}")) {
        return Some((id, PinKind::Tag));
    }
    if let Some(id) = commit_of(&format!("refs/heads/{rev}")) {
        return Some((id, PinKind::Branch));
    }
    if rev.len() >= 4 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(c) = repo.find_commit_by_prefix(rev) {
            return Some((c.id(), PinKind::Commit));
        }
    }
    if rev == "HEAD" {
        return commit_of("HEAD").map(|id| (id, PinKind::Branch));
    }
    None
}

fn is_full_hex(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Variables a git hook (or a user) may have set that would point git at another repository.
const GIT_REPO_ENV: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// `git --git-dir DIR fetch --quiet -- URL REFSPEC...`; the error is what git said.
fn git_fetch(git_dir: &Path, url: &str, refspecs: &[&str]) -> std::result::Result<(), String> {
    let mut cmd = Command::new("git");
    for var in GIT_REPO_ENV {
        cmd.env_remove(var);
    }
    // No prompt nobody can answer (stdin is not ours); credential helpers still work.
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(["fetch", "--quiet", "--"])
        .arg(url)
        .args(refspecs);
    match proc::output(&mut cmd, None) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let said = proc::tail(&String::from_utf8_lossy(&out.stderr), 8);
            Err(if said.is_empty() {
                format!("`{}` failed ({})", proc::display(&cmd), out.status)
            } else {
                said
            })
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The part of a URL a mirror entry would name (up to its last `/`, or the `host:` of an
/// scp-like address) and the rest.
fn url_prefix(url: &str) -> (String, String) {
    let body_start = url.find("://").map_or(0, |i| i + 3);
    match url[body_start..].rfind('/') {
        Some(i) => {
            let cut = body_start + i + 1;
            (url[..cut].to_string(), url[cut..].to_string())
        }
        None => match url.find(':') {
            Some(i) if body_start == 0 => (url[..=i].to_string(), url[i + 1..].to_string()),
            _ => (url.to_string(), String::new()),
        },
    }
}

fn indent(text: &str, pad: &str) -> String {
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `.tmp-NAME-PID` beside `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{name}-{}", std::process::id()))
}

fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.with_context(|| format!("remove the broken cache {}", path.display()))
}

/// Removes what killed runs left: `.tmp-*` beside bare repositories and checkouts. Only called
/// under the lock, so none of them belongs to a live run.
fn sweep_leftovers(root: &Path) {
    for dir in [root.join(".xtask/git"), root.join(".xtask/sources")] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = remove(&e.path());
            }
        }
    }
}

/// One `sources` run per workspace at a time: an advisory lock the kernel drops with the
/// process, so a killed run never leaves it held.
fn lock(root: &Path, progress: &Progress) -> Result<nix::fcntl::Flock<File>> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    let path = root.join(".xtask/sources.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, Errno::EWOULDBLOCK)) => {
            progress.line("waiting for another `cargo xtask sources` run in this workspace");
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow!("lock {}: {e}", path.display()))
        }
        Err((_, e)) => bail!("lock {}: {e}", path.display()),
    }
}

/// Prefix rewrites of remote URLs, like git's `url.<base>.insteadOf`.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    /// `(from, to)`, longest `from` first.
    rules: Vec<(String, String)>,
    /// `mirrors.toml` or `XTASK_MIRRORS`.
    pub origin: String,
}

/// `mirrors.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorsFile {
    #[serde(default)]
    mirrors: BTreeMap<String, String>,
}

impl Mirrors {
    /// `XTASK_MIRRORS` when it is set and not blank (the file is then not read), else
    /// `mirrors.toml` at the workspace root when it exists.
    pub fn load(root: &Path) -> Result<Mirrors> {
        if let Some(value) = std::env::var_os(MIRRORS_ENV) {
            let value = value
                .into_string()
                .map_err(|_| anyhow!("{MIRRORS_ENV} is not valid UTF-8"))?;
            if !value.trim().is_empty() {
                let cwd = std::env::current_dir().context("the current directory")?;
                return Mirrors::from_env(&value, &cwd);
            }
        }
        let path = root.join(MIRRORS_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
                Mirrors::from_file(&text, &root)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mirrors {
                rules: Vec::new(),
                origin: MIRRORS_FILE.to_string(),
            }),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    fn from_env(value: &str, cwd: &Path) -> Result<Mirrors> {
        let mut rules = Vec::new();
        for entry in value.split_whitespace() {
            let Some((from, to)) = entry.split_once('=') else {
                bail!(
                    "{MIRRORS_ENV}: entry `{entry}` is not FROM=TO \
                     (e.g. {MIRRORS_ENV}='https://github.com/org/=/srv/git-mirrors/org/')"
                );
            };
            check_rule(from, to).map_err(|e| anyhow!("{MIRRORS_ENV}: entry `{entry}`: {e}"))?;
            rules.push((from.to_string(), absolute_target(to, cwd)));
        }
        Ok(Mirrors::sorted(rules, MIRRORS_ENV))
    }

    fn from_file(text: &str, root: &Path) -> Result<Mirrors> {
        let doc = Doc {
            rel: MIRRORS_FILE.to_string(),
            text: text.to_string(),
        };
        let render = |d: Diagnostic| {
            let text = d.render(Some(&doc));
            anyhow!(
                "{}",
                text.strip_prefix("error: ").unwrap_or(&text).trim_end()
            )
        };
        let file: MirrorsFile = toml::from_str(text).map_err(|e| {
            let message = e
                .message()
                .trim_end()
                .replace("unknown field", "unknown key")
                .replace("missing field", "missing key");
            let (message, expected) = match message.split_once(", expected ") {
                Some((m, x)) => (m.to_string(), Some(x.to_string())),
                None => (message, None),
            };
            render(Diagnostic {
                file: MIRRORS_FILE.to_string(),
                key: None,
                span: e.span(),
                message,
                expected: expected.or_else(|| {
                    Some("`[mirrors]` with `\"FROM-PREFIX\" = \"TO-PREFIX\"` strings".into())
                }),
            })
        })?;
        let mut rules = Vec::new();
        for (from, to) in file.mirrors {
            if let Err(e) = check_rule(&from, &to) {
                let key = format!("mirrors.\"{from}\"");
                let mut d = Diagnostic::new(MIRRORS_FILE, format!("mirror `{from}`: {e}"));
                d.span = doc.locate(&[
                    model::diag::Seg::Key("mirrors".into()),
                    model::diag::Seg::Key(from.clone()),
                ]);
                d.key = Some(key);
                return Err(render(
                    d.expected("a URL prefix = a URL or directory prefix"),
                ));
            }
            rules.push((from, absolute_target(&to, root)));
        }
        Ok(Mirrors::sorted(rules, MIRRORS_FILE))
    }

    fn sorted(mut rules: Vec<(String, String)>, origin: &str) -> Mirrors {
        // Longest prefix first; of equal ones, the last given wins (as in a shell).
        rules.reverse();
        rules.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Mirrors {
            rules,
            origin: origin.to_string(),
        }
    }

    /// The URL to fetch `url` from, when a mirror covers it.
    pub fn rewrite(&self, url: &str) -> Option<String> {
        self.rules
            .iter()
            .find(|(from, _)| url.starts_with(from.as_str()))
            .map(|(from, to)| format!("{to}{}", &url[from.len()..]))
    }
}

fn check_rule(from: &str, to: &str) -> std::result::Result<(), String> {
    if from.is_empty() {
        return Err("an empty prefix would map every remote".into());
    }
    if to.is_empty() {
        return Err("an empty target".into());
    }
    if to.starts_with('-') {
        return Err("a target may not start with `-`".into());
    }
    Ok(())
}

/// A relative directory target made absolute against `base`; URLs stay as they are.
fn absolute_target(to: &str, base: &Path) -> String {
    let url_like = to.contains("://")
        || to
            .find(':')
            .is_some_and(|i| i > 1 && !to[..i].contains('/'));
    if url_like || to.starts_with('/') {
        to.to_string()
    } else {
        let to = to.strip_prefix("./").unwrap_or(to);
        format!("{}/{to}", base.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_rest_is_kept() {
        let m = Mirrors::from_env(
            "https://h/=/all/ https://h/org/=/org/ git@h:=https://m/",
            Path::new("/cwd"),
        )
        .unwrap();
        assert_eq!(m.rewrite("https://h/org/r.git").unwrap(), "/org/r.git");
        assert_eq!(m.rewrite("https://h/x/r").unwrap(), "/all/x/r");
        assert_eq!(m.rewrite("git@h:o/r").unwrap(), "https://m/o/r");
        assert_eq!(m.rewrite("https://other/r"), None);
    }

    #[test]
    fn relative_targets_resolve_against_the_base() {
        let m = Mirrors::from_env("https://h/=mirrors/ https://g/=./m/", Path::new("/w")).unwrap();
        assert_eq!(m.rewrite("https://h/r").unwrap(), "/w/mirrors/r");
        assert_eq!(m.rewrite("https://g/r").unwrap(), "/w/m/r");
    }

    #[test]
    fn bad_entries_are_errors() {
        assert!(Mirrors::from_env("nope", Path::new("/")).is_err());
        assert!(Mirrors::from_env("=x", Path::new("/")).is_err());
        assert!(Mirrors::from_env("a=-x", Path::new("/")).is_err());
        let e = Mirrors::from_file("[mirror]\n\"a\" = \"b\"\n", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mirrors.toml:1:"), "{e}");
        let e = Mirrors::from_file("[mirrors]\n\"a\" = 1\n", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mirrors.toml:2:"), "{e}");
    }

    #[test]
    fn url_prefixes_for_the_hint() {
        assert_eq!(
            url_prefix("https://github.com/org/repo.git"),
            ("https://github.com/org/".into(), "repo.git".into())
        );
        assert_eq!(
            url_prefix("git@github.com:repo.git"),
            ("git@github.com:".into(), "repo.git".into())
        );
    }

    #[test]
    fn shared_mirror_advice_is_given_once_after_the_errors_it_serves() {
        let err = |name: &str, owner: &str| {
            format!(
                "`{name}` (d): could not fetch the source from https://h/{owner}/{name}:\n    fatal: x{ADVICE}, fetch from a local copy: ...\n      \"https://h/{owner}/\" = \"/srv/\"{ADVICE_ONE}https://h/{owner}/{name} is fetched from /srv/{name}"
            )
        };
        let other = "`c` (d): revision `v9` does not exist".to_string();
        let text = condense(&[err("a", "o"), other.clone(), err("b", "o"), err("z", "p")]);
        // Not grouped: the error without advice, and the one remote of owner p, whole.
        assert!(text.contains(&other), "{text}");
        assert!(text.contains(&err("z", "p")), "{text}");
        // a and b: both named, their shared advice once, the per-remote line generalised.
        assert!(
            text.contains("from https://h/o/a:") && text.contains("from https://h/o/b:"),
            "{text}"
        );
        assert_eq!(text.matches("\"https://h/o/\" = ").count(), 1, "{text}");
        assert!(!text.contains("https://h/o/a is fetched"), "{text}");
        assert!(
            text.contains("each of these remotes is fetched from there"),
            "{text}"
        );
        // One error alone is left as it is.
        assert_eq!(condense(&[err("a", "o")]), err("a", "o"));
    }
}
