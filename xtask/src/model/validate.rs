//! Whole-workspace validation. Every rule pushes a located diagnostic and carries on, so one
//! `check` run shows every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Component, Path};

use super::diag::{Diagnostic, Doc};
use super::schema::*;
use super::{Host, Lib, Model, Service};

pub const NAME_RULE: &str =
    "a name of lowercase letters, digits and `-` (not first), at most 63 characters";
const ENV_RULE: &str =
    "an environment variable name: `A-Z`, `0-9` and `_`, not starting with a digit";

/// Names become directory names, container names and labels: `[a-z0-9-]` only, so none can
/// traverse a path or smuggle shell syntax.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A relative path that stays inside its base: no absolute paths, no `..`, no empty path.
pub fn is_inner_path(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && !path.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn is_absolute_clean(path: &str) -> bool {
    let p = Path::new(path);
    p.is_absolute()
        && !path.contains('\0')
        && !path.contains('\n')
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// `${NAME}` and `${service.NAME}` references in an env value.
pub fn secret_refs(value: &str) -> Vec<(Option<&str>, &str)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        match inner.split_once('.') {
            Some((svc, name)) => out.push((Some(svc), name)),
            None => out.push((None, inner)),
        }
        rest = &after[end + 1..];
    }
    out
}

fn is_cron(expr: &str) -> bool {
    const NAMED: [&str; 7] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    if NAMED.contains(&expr) {
        return true;
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|f| {
            f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'/' | b',' | b'-'))
        })
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u8>()) else {
        return false;
    };
    match addr {
        IpAddr::V4(_) => prefix <= 32,
        IpAddr::V6(_) => prefix <= 128,
    }
}

/// `user@host[:port]`: a user and host that cannot be read as an ssh option.
fn is_ssh_target(s: &str) -> bool {
    let Some((user, rest)) = s.split_once('@') else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let user_ok = !user.is_empty()
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    user_ok && host_ok && port_ok
}

/// `module.sub` or `module.sub:Attribute`.
fn is_import(s: &str) -> bool {
    let ident = |p: &str| {
        !p.is_empty()
            && !p.as_bytes()[0].is_ascii_digit()
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let (module, attr) = match s.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (s, None),
    };
    module.split('.').all(ident) && attr.is_none_or(|a| a.split('.').all(ident))
}

/// "one of `a`, `b`", or a sentence saying there is nothing to choose from.
fn one_of(items: impl IntoIterator<Item = impl AsRef<str>>, what: &str) -> String {
    let l = list(items);
    if l == "none" {
        format!("{what} (there are none)")
    } else {
        format!("one of {l}")
    }
}

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

pub fn validate(model: &Model, diags: &mut Vec<Diagnostic>) {
    for s in &model.services {
        service(model, s, &model.docs[s.doc], diags);
    }
    cycles(model, diags);
    for h in &model.hosts {
        host(model, h, &model.docs[h.doc], diags);
    }
    for l in &model.libs {
        lib(model, l, &model.docs[l.doc], diags);
    }
}

fn check_name(doc: &Doc, expected_name: &str, name: &str, what: &str, diags: &mut Vec<Diagnostic>) {
    if !is_name(name) {
        diags.push(
            Diagnostic::at(doc, "name", format!("invalid {what} name `{name}`"))
                .expected(NAME_RULE),
        );
    } else if name != expected_name {
        diags.push(
            Diagnostic::at(
                doc,
                "name",
                format!("{what} name `{name}` does not match its file"),
            )
            .expected(format!("`{expected_name}`, the name its path gives it")),
        );
    }
}

fn source(model: &Model, doc: &Doc, src: &Source, diags: &mut Vec<Diagnostic>) {
    match (&src.git, &src.path) {
        (Some(_), Some(_)) => diags.push(
            Diagnostic::at(doc, "source", "source has both `git` and `path`")
                .expected("either `git` + `rev` or `path`"),
        ),
        (None, None) => diags.push(
            Diagnostic::at(doc, "source", "source has neither `git` nor `path`")
                .expected("either `git` + `rev` or `path`"),
        ),
        (Some(git), None) => {
            if git.starts_with('-') || git.chars().any(char::is_whitespace) || git.is_empty() {
                diags.push(
                    Diagnostic::at(doc, "source.git", format!("invalid git remote `{git}`"))
                        .expected("a git URL or path without spaces, not starting with `-`"),
                );
            }
            match &src.rev {
                None => diags.push(
                    Diagnostic::at(doc, "source", "git source without a pinned `rev`")
                        .expected("`rev = \"<commit, tag or branch>\"`"),
                ),
                Some(rev) => {
                    let ok = !rev.is_empty()
                        && !rev.starts_with('-')
                        && rev
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
                        && !rev.contains("..");
                    if !ok {
                        diags.push(
                            Diagnostic::at(doc, "source.rev", format!("invalid revision `{rev}`"))
                                .expected("a commit id, tag or branch name"),
                        );
                    }
                }
            }
        }
        (None, Some(path)) => {
            if src.rev.is_some() {
                diags.push(
                    Diagnostic::at(doc, "source.rev", "`rev` given for a `path` source")
                        .expected("`rev` only with `git`"),
                );
            }
            if !is_inner_path(path) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        "source.path",
                        format!("source path `{path}` leaves the workspace"),
                    )
                    .expected("a relative path inside the workspace, without `..`"),
                );
            } else if !model.root.join(path).is_dir() {
                diags.push(
                    Diagnostic::at(
                        doc,
                        "source.path",
                        format!("source directory `{path}` does not exist"),
                    )
                    .expected("a directory relative to the workspace root"),
                );
            }
        }
    }
}

fn service(model: &Model, s: &Service, doc: &Doc, diags: &mut Vec<Diagnostic>) {
    let spec = &s.spec;
    check_name(doc, &s.name, &spec.name, "service", diags);
    let active = spec.status == Status::Active;

    if let Some(src) = &spec.source {
        source(model, doc, src, diags);
    }

    // Secrets: declared once each, valid names, one way to come into being.
    let mut declared = BTreeSet::new();
    for (i, sec) in spec.secrets.iter().enumerate() {
        let key = format!("secrets[{i}].name");
        // Invalid names count as declared too, so references to them are not reported again.
        let first = declared.insert(sec.name.as_str());
        if !is_env_name(&sec.name) {
            diags.push(
                Diagnostic::at(doc, &key, format!("invalid secret name `{}`", sec.name))
                    .expected(ENV_RULE),
            );
        } else if !first {
            diags.push(
                Diagnostic::at(
                    doc,
                    &key,
                    format!("secret `{}` is declared twice", sec.name),
                )
                .expected("each secret name once"),
            );
        }
        match (sec.generate.is_some(), sec.from_env) {
            (true, true) => diags.push(
                Diagnostic::at(
                    doc,
                    &format!("secrets[{i}]"),
                    format!(
                        "secret `{}` is both generated and from the environment",
                        sec.name
                    ),
                )
                .expected("either `generate` or `from_env = true`"),
            ),
            (false, false) => diags.push(
                Diagnostic::at(
                    doc,
                    &format!("secrets[{i}]"),
                    format!("secret `{}` has no source", sec.name),
                )
                .expected(
                    "`generate = \"hex32\" | \"fernet\" | \"password\"` or `from_env = true`",
                ),
            ),
            _ => {}
        }
        if spec.kind == ServiceKind::Workflow && sec.name.starts_with("GITHUB_") {
            diags.push(
                Diagnostic::at(
                    doc,
                    &key,
                    format!("secret name `{}` is reserved by GitHub Actions", sec.name),
                )
                .expected(
                    "a name not starting with `GITHUB_` (the runner provides GITHUB_TOKEN itself)",
                ),
            );
        }
    }

    let deps: Vec<&str> = spec
        .run
        .iter()
        .flat_map(|r| r.depends_on.iter().map(String::as_str))
        .collect();

    if let Some(run) = &spec.run {
        for (i, dep) in run.depends_on.iter().enumerate() {
            let key = format!("run.depends_on[{i}]");
            if dep == &s.name {
                diags.push(
                    Diagnostic::at(doc, &key, format!("service `{dep}` depends on itself"))
                        .expected("another service"),
                );
            } else if model.service(dep).is_none() && !model.unparsed.contains(dep) {
                // A service cannot depend on itself: do not offer it.
                diags.push(
                    Diagnostic::at(doc, &key, format!("unknown service `{dep}`")).expected(one_of(
                        model
                            .services
                            .iter()
                            .map(|s| &s.name)
                            .filter(|n| **n != s.name),
                        "another service defined in services/NAME/service.toml",
                    )),
                );
            }
        }
        for (k, v) in &run.env {
            let key = format!("run.env.{k}");
            if !is_env_name(k) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &key,
                        format!("invalid environment variable name `{k}`"),
                    )
                    .expected(ENV_RULE),
                );
            }
            // An env file holds one variable a line: a line break would smuggle in another
            // variable (or cut this one short), and a NUL ends the value early.
            if v.contains(['\n', '\r', '\0']) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &key,
                        format!("the value of `{k}` contains a line break or NUL"),
                    )
                    .expected("a value on one line"),
                );
            }
            for (svc, name) in secret_refs(v) {
                match svc {
                    None if !declared.contains(name) => diags.push(
                        Diagnostic::at(
                            doc,
                            &key,
                            format!(
                                "`{k}` uses secret `{name}`, which `{}` does not declare",
                                s.name
                            ),
                        )
                        .expected(format!(
                            "a `[[secrets]]` entry named `{name}` (declared: {})",
                            list(&declared)
                        )),
                    ),
                    Some(other) => {
                        if !deps.contains(&other) {
                            diags.push(
                                Diagnostic::at(doc, &key, format!("`{k}` uses a secret of `{other}`, which is not in depends_on"))
                                    .expected(format!("`{other}` in run.depends_on")),
                            );
                        } else if let Some(o) = model.service(other) {
                            if !o.spec.secrets.iter().any(|x| x.name == name) {
                                diags.push(
                                    Diagnostic::at(doc, &key, format!("`{k}` uses secret `{name}`, which `{other}` does not declare"))
                                        .expected(format!("one of {}", list(o.spec.secrets.iter().map(|x| &x.name)))),
                                );
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        let mut seen_ports = BTreeSet::new();
        let mut seen_host_ports = BTreeSet::new();
        for (i, p) in run.ports.iter().enumerate() {
            if let Some(hp) = p
                .host
                .filter(|hp| !seen_host_ports.insert((*hp, p.protocol)))
            {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("run.ports[{i}].host"),
                        format!("host port {hp} is published twice"),
                    )
                    .expected("each host port once"),
                );
            }
            if !seen_ports.insert(p.container) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("run.ports[{i}].container"),
                        format!("container port {} is listed twice", p.container),
                    )
                    .expected("each container port once"),
                );
            }
            if p.container == 0 || p.host == Some(0) {
                diags.push(
                    Diagnostic::at(doc, &format!("run.ports[{i}]"), "port 0 is not a port")
                        .expected("1-65535"),
                );
            }
        }
        for (i, v) in run.volumes.iter().enumerate() {
            if !is_name(&v.name) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("run.volumes[{i}].name"),
                        format!("invalid volume name `{}`", v.name),
                    )
                    .expected(NAME_RULE),
                );
            }
            if !is_absolute_clean(&v.target) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("run.volumes[{i}].target"),
                        format!("invalid mount point `{}`", v.target),
                    )
                    .expected("an absolute path without `..`"),
                );
            }
        }
        if let Some(w) = &run.workdir {
            if !is_absolute_clean(w) {
                diags.push(
                    Diagnostic::at(doc, "run.workdir", format!("invalid workdir `{w}`"))
                        .expected("an absolute path without `..`"),
                );
            }
        }
    }

    if let Some(image) = &spec.image {
        if !is_inner_path(&image.dockerfile) {
            diags.push(
                Diagnostic::at(
                    doc,
                    "image.dockerfile",
                    format!(
                        "Dockerfile path `{}` leaves the service directory",
                        image.dockerfile
                    ),
                )
                .expected("a relative path inside services/NAME/"),
            );
        } else if !s.dir.join(&image.dockerfile).is_file() {
            diags.push(
                Diagnostic::at(
                    doc,
                    "image.dockerfile",
                    format!(
                        "Dockerfile `services/{}/{}` does not exist",
                        s.name, image.dockerfile
                    ),
                )
                .expected("a Dockerfile vendored beside service.toml"),
            );
        }
        if let Some(ctx) = &image.context {
            if !is_inner_path(ctx) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        "image.context",
                        format!("build context `{ctx}` leaves the source"),
                    )
                    .expected("a relative path inside the component's source"),
                );
            } else if let Some(path) = spec.source.as_ref().and_then(|s| s.path.as_ref()) {
                if is_inner_path(path) && !model.root.join(path).join(ctx).is_dir() {
                    diags.push(
                        Diagnostic::at(
                            doc,
                            "image.context",
                            format!("build context `{path}/{ctx}` does not exist"),
                        )
                        .expected("a directory inside the component's source"),
                    );
                }
            }
        }
        if image.base.is_empty()
            || image.base.starts_with('-')
            || image.base.chars().any(char::is_whitespace)
        {
            diags.push(
                Diagnostic::at(
                    doc,
                    "image.base",
                    format!("invalid base image `{}`", image.base),
                )
                .expected("an image reference such as `python:3.11-slim`"),
            );
        }
        for k in image.args.keys() {
            if !is_env_name(k) && !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("image.args.{k}"),
                        format!("invalid build argument name `{k}`"),
                    )
                    .expected(ENV_RULE),
                );
            }
        }
    }

    // Checks may only talk to ports the service exposes.
    let ports: BTreeSet<u16> = spec
        .run
        .iter()
        .flat_map(|r| r.ports.iter().map(|p| p.container))
        .collect();
    let mut checks: Vec<(String, &Check)> = Vec::new();
    if let Some(h) = &spec.health {
        checks.push(("health.check".to_string(), &h.check));
        if h.deadline_secs == 0 {
            diags.push(
                Diagnostic::at(doc, "health.deadline_secs", "a deadline of 0 s")
                    .expected("a number of seconds above 0"),
            );
        }
    }
    for (i, c) in spec.smoke.iter().enumerate() {
        checks.push((format!("smoke[{i}]"), c));
    }
    // An active container without [run] is reported below; its checks' ports are not.
    let run_missing = active && spec.kind == ServiceKind::Container && spec.run.is_none();
    for (key, c) in &checks {
        if let Some(port) = c.port().filter(|_| !run_missing) {
            if !ports.contains(&port) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("{key}.port"),
                        format!(
                            "{} check on port {port}, which `{}` does not expose",
                            c.type_name(),
                            s.name
                        ),
                    )
                    .expected(format!(
                        "one of the service's run.ports: {}",
                        list(ports.iter().map(|p| p.to_string()))
                    )),
                );
            }
        }
        match c {
            Check::Http(h) if !h.path.starts_with('/') => {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("{key}.path"),
                        format!("HTTP path `{}` does not start with `/`", h.path),
                    )
                    .expected("an absolute URL path"),
                );
            }
            Check::PythonImport(p) if !is_import(&p.import) => {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("{key}.import"),
                        format!("invalid import `{}`", p.import),
                    )
                    .expected("`module.sub` or `module.sub:Attribute`"),
                );
            }
            Check::Command(cmd) if cmd.command.is_empty() => {
                diags.push(
                    Diagnostic::at(doc, &format!("{key}.command"), "empty command")
                        .expected("an argv with at least the program"),
                );
            }
            Check::Mcp(m) if spec.kind != ServiceKind::McpStdio => {
                let _ = m;
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("{key}.type"),
                        format!("MCP check on a `{}` service", spec.kind.as_str()),
                    )
                    .expected("MCP checks only on `kind = \"mcp-stdio\"` services"),
                );
            }
            _ => {}
        }
    }

    if let Some(b) = &spec.backup {
        if let Some(sched) = &b.schedule {
            if !is_cron(sched) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        "backup.schedule",
                        format!("invalid cron schedule `{sched}`"),
                    )
                    .expected("five cron fields such as `0 2 * * *`"),
                );
            }
        }
        if matches!(b.kind, BackupKind::PgDump | BackupKind::Volumes) && b.schedule.is_none() {
            diags.push(
                Diagnostic::at(
                    doc,
                    "backup",
                    format!("{} backup without a schedule", b.kind.as_str()),
                )
                .expected("`schedule = \"0 2 * * *\"`"),
            );
        }
    }

    for (i, w) in spec.workflows.iter().enumerate() {
        if spec.kind != ServiceKind::Workflow {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("workflows[{i}]"),
                    format!("workflow on a `{}` service", spec.kind.as_str()),
                )
                .expected("workflows only on `kind = \"workflow\"` services"),
            );
        }
        if !is_name(&w.name) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("workflows[{i}].name"),
                    format!("invalid workflow name `{}`", w.name),
                )
                .expected(NAME_RULE),
            );
        }
        for (j, sched) in w.schedule.iter().enumerate() {
            if !is_cron(sched) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("workflows[{i}].schedule[{j}]"),
                        format!("invalid cron schedule `{sched}`"),
                    )
                    .expected("five cron fields such as `0 21 * * *`"),
                );
            }
        }
        for (j, name) in w.secrets.iter().enumerate() {
            if name != "GITHUB_TOKEN" && !declared.contains(name.as_str()) {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("workflows[{i}].secrets[{j}]"),
                        format!(
                            "workflow `{}` uses secret `{name}`, which is not declared",
                            w.name
                        ),
                    )
                    .expected(format!(
                        "a `[[secrets]]` entry named `{name}` (declared: {})",
                        list(&declared)
                    )),
                );
            }
        }
    }

    // What a kind needs to run at all; planned components may still lack it.
    if active {
        let need = |diags: &mut Vec<Diagnostic>, missing: bool, what: &str, hint: &str| {
            if missing {
                diags.push(
                    Diagnostic::at(
                        doc,
                        "kind",
                        format!("active `{}` service without {what}", spec.kind.as_str()),
                    )
                    .expected(hint.to_string()),
                );
            }
        };
        match spec.kind {
            ServiceKind::Container => {
                need(
                    diags,
                    spec.image.is_none(),
                    "an [image]",
                    "an [image] table with the vendored Dockerfile",
                );
                need(
                    diags,
                    spec.run.is_none(),
                    "a [run] table",
                    "a [run] table (command, ports, env)",
                );
                need(
                    diags,
                    spec.health.is_none(),
                    "a [health] check",
                    "a [health] check so `up` can gate on it",
                );
            }
            ServiceKind::McpStdio => {
                need(
                    diags,
                    spec.run.as_ref().is_none_or(|r| r.command.is_empty()),
                    "a run.command",
                    "run.command, the argv that starts the server",
                );
                need(
                    diags,
                    spec.source.is_none(),
                    "a [source]",
                    "a [source] with the server's code",
                );
            }
            ServiceKind::Workflow => {
                need(
                    diags,
                    spec.workflows.is_empty(),
                    "any [[workflows]]",
                    "at least one [[workflows]] entry",
                );
            }
            ServiceKind::ScheduledJob | ServiceKind::HostManaged => {}
        }
    }
}

/// Reports each dependency cycle once, at the `depends_on` entry that closes it.
fn cycles(model: &Model, diags: &mut Vec<Diagnostic>) {
    let edges: BTreeMap<&str, Vec<&str>> = model
        .services
        .iter()
        .map(|s| {
            let deps = s
                .spec
                .run
                .iter()
                .flat_map(|r| r.depends_on.iter().map(String::as_str))
                .filter(|d| *d != s.name && model.service(d).is_some())
                .collect();
            (s.name.as_str(), deps)
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        found: &mut Vec<Vec<&'a str>>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for &next in &edges[node] {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, found),
                1 => {
                    let start = stack.iter().position(|n| *n == next).unwrap_or(0);
                    found.push(stack[start..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    let mut found = Vec::new();
    for &node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut found);
        }
    }
    for cycle in found {
        let mut canon = cycle.clone();
        canon.sort();
        if !reported.insert(canon) {
            continue;
        }
        let last = cycle[cycle.len() - 1];
        let first = cycle[0];
        let svc = model.service(last).expect("cycle nodes are services");
        let i = svc
            .spec
            .run
            .as_ref()
            .and_then(|r| r.depends_on.iter().position(|d| d == first))
            .unwrap_or(0);
        let mut path: Vec<&str> = cycle.clone();
        path.push(first);
        diags.push(
            Diagnostic::at(
                &model.docs[svc.doc],
                &format!("run.depends_on[{i}]"),
                format!("dependency cycle: {}", path.join(" -> ")),
            )
            .expected("dependencies that form no cycle"),
        );
    }
}

fn host(model: &Model, h: &Host, doc: &Doc, diags: &mut Vec<Diagnostic>) {
    let spec = &h.spec;
    check_name(doc, &h.name, &spec.name, "host", diags);

    match spec.reach {
        Reach::Ssh => match &spec.ssh {
            None => diags.push(
                Diagnostic::at(doc, "reach", "`reach = \"ssh\"` without an `ssh` target")
                    .expected("`ssh = \"user@host[:port]\"`"),
            ),
            Some(t) if !is_ssh_target(t) => diags.push(
                Diagnostic::at(doc, "ssh", format!("invalid ssh target `{t}`"))
                    .expected("`user@host` or `user@host:port`"),
            ),
            _ => {}
        },
        _ => {
            if spec.ssh.is_some() {
                diags.push(
                    Diagnostic::at(
                        doc,
                        "ssh",
                        format!("`ssh` given for a `{}` host", spec.reach.as_str()),
                    )
                    .expected("`ssh` only with `reach = \"ssh\"`"),
                );
            }
        }
    }
    match &spec.root {
        Some(root) if !is_absolute_clean(root) => {
            diags.push(
                Diagnostic::at(doc, "root", format!("invalid root directory `{root}`"))
                    .expected("an absolute path without `..`"),
            );
        }
        None if spec.reach == Reach::Ssh => {
            diags.push(
                Diagnostic::at(doc, "reach", "ssh host without a `root` directory")
                    .expected("`root = \"/opt/services\"`"),
            );
        }
        _ => {}
    }

    // A listed service that is unknown or did not parse is already reported; it may be the one
    // a route, cron entry, firewall rule or dependency means, so those are not reported again.
    let incomplete = spec.services.iter().any(|n| model.service(n).is_none());
    let mut seen = BTreeSet::new();
    // Which service holds each published host port, to find a port used twice.
    let mut published: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
    for (i, name) in spec.services.iter().enumerate() {
        let key = format!("services[{i}]");
        if !seen.insert(name.as_str()) {
            diags.push(
                Diagnostic::at(doc, &key, format!("service `{name}` is listed twice"))
                    .expected("each service once"),
            );
            continue;
        }
        let Some(svc) = model.service(name) else {
            if model.unparsed.contains(name) {
                continue;
            }
            diags.push(
                Diagnostic::at(doc, &key, format!("unknown service `{name}`")).expected(one_of(
                    model.services.iter().map(|s| &s.name),
                    "a service defined in services/NAME/service.toml",
                )),
            );
            continue;
        };
        let fits = match spec.reach {
            Reach::GithubActions => svc.spec.kind == ServiceKind::Workflow,
            Reach::Imported => false,
            Reach::Local | Reach::Ssh => svc.spec.kind != ServiceKind::Workflow,
        };
        if !fits {
            diags.push(
                Diagnostic::at(
                    doc,
                    &key,
                    format!(
                        "`{name}` is a `{}` service, which a `{}` host cannot run",
                        svc.spec.kind.as_str(),
                        spec.reach.as_str()
                    ),
                )
                .expected(match spec.reach {
                    Reach::GithubActions => "only `workflow` services on a github-actions host",
                    Reach::Imported => "libraries (`libs = [...]`) only on an imported host",
                    _ => "no `workflow` services on a machine host",
                }),
            );
        }
        for p in svc.spec.run.iter().flat_map(|r| &r.ports) {
            let Some(hp) = p.host else { continue };
            if let Some(other) = published
                .insert((hp, p.protocol), name)
                .filter(|o| o != name)
            {
                diags.push(
                    Diagnostic::at(doc, &key, format!("host port {hp} is published by both `{other}` and `{name}` on host `{}`", h.name))
                        .expected("each host port used by one service per host"),
                );
            }
        }
        for dep in svc.spec.run.iter().flat_map(|r| &r.depends_on) {
            if model.service(dep).is_some() && !spec.services.contains(dep) && !incomplete {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &key,
                        format!(
                            "`{name}` depends on `{dep}`, which host `{}` does not run",
                            h.name
                        ),
                    )
                    .expected(format!("`{dep}` in services")),
                );
            }
        }
    }
    if let Some(proxy) = &spec.proxy {
        if let Some(other) = published.get(&(proxy.listen, Protocol::Tcp)) {
            diags.push(
                Diagnostic::at(
                    doc,
                    "proxy.listen",
                    format!("proxy port {} is also published by `{other}`", proxy.listen),
                )
                .expected("a port no service publishes"),
            );
        }
        for (i, r) in proxy.routes.iter().enumerate() {
            if !r.path.starts_with('/')
                || r.path.contains(char::is_whitespace)
                || r.path.contains(['{', '}', ';'])
            {
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("proxy.routes[{i}].path"),
                        format!("invalid route path `{}`", r.path),
                    )
                    .expected("a URL path starting with `/`, without spaces, `{`, `}` or `;`"),
                );
            }
            if !spec.services.contains(&r.service) {
                if incomplete {
                    continue;
                }
                diags.push(
                    Diagnostic::at(
                        doc,
                        &format!("proxy.routes[{i}].service"),
                        format!(
                            "route to `{}`, which host `{}` does not run",
                            r.service, h.name
                        ),
                    )
                    .expected(format!(
                        "one of the host's services: {}",
                        list(&spec.services)
                    )),
                );
            } else if let Some(svc) = model.service(&r.service) {
                let port = svc
                    .spec
                    .run
                    .iter()
                    .flat_map(|x| &x.ports)
                    .find(|p| p.container == r.port);
                if port.is_some_and(|p| p.host.is_none()) {
                    // The proxy runs on the host and reaches services on 127.0.0.1:<host port>.
                    diags.push(
                        Diagnostic::at(
                            doc,
                            &format!("proxy.routes[{i}].port"),
                            format!(
                                "route to port {} of `{}`, which it does not publish on the host",
                                r.port, r.service
                            ),
                        )
                        .expected(format!(
                            "`host = <port>` on port {} in `{}`'s run.ports (the proxy reaches it through the host port)",
                            r.port, r.service
                        )),
                    );
                }
                if port.is_none() {
                    diags.push(
                        Diagnostic::at(
                            doc,
                            &format!("proxy.routes[{i}].port"),
                            format!(
                                "route to port {} of `{}`, which it does not expose",
                                r.port, r.service
                            ),
                        )
                        .expected(format!(
                            "one of {}",
                            list(
                                svc.spec
                                    .run
                                    .iter()
                                    .flat_map(|x| &x.ports)
                                    .map(|p| p.container.to_string())
                            )
                        )),
                    );
                }
            }
        }
    }
    for (i, f) in spec.firewall.iter().enumerate() {
        if !is_cidr(&f.allow) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("firewall[{i}].allow"),
                    format!("invalid subnet `{}`", f.allow),
                )
                .expected("a CIDR subnet such as `192.168.10.0/24`"),
            );
        }
        let proxied = spec.proxy.as_ref().is_some_and(|p| p.listen == f.port);
        if !published.contains_key(&(f.port, f.protocol)) && !proxied && !incomplete {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("firewall[{i}].port"),
                    format!(
                        "firewall rule for port {}, which nothing on host `{}` publishes",
                        f.port, h.name
                    ),
                )
                .expected(format!(
                    "a published port: {}",
                    list(published.keys().map(|(p, _)| p.to_string()))
                )),
            );
        }
    }
    let mut cron_names = BTreeSet::new();
    for (i, c) in spec.cron.iter().enumerate() {
        if !is_name(&c.name) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("cron[{i}].name"),
                    format!("invalid cron entry name `{}`", c.name),
                )
                .expected(NAME_RULE),
            );
        } else if !cron_names.insert(c.name.as_str()) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("cron[{i}].name"),
                    format!("cron entry `{}` is declared twice", c.name),
                )
                .expected("each cron name once"),
            );
        }
        if !is_cron(&c.schedule) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("cron[{i}].schedule"),
                    format!("invalid cron schedule `{}`", c.schedule),
                )
                .expected("five cron fields such as `0 2 * * *`"),
            );
        }
        match c.task {
            CronTask::Command => {
                if c.command.is_empty() {
                    diags.push(
                        Diagnostic::at(
                            doc,
                            &format!("cron[{i}]"),
                            "command task without a command",
                        )
                        .expected("`command = [\"program\", \"arg\"]`"),
                    );
                }
            }
            task => {
                let Some(name) = &c.service else {
                    diags.push(
                        Diagnostic::at(doc, &format!("cron[{i}]"), "cron task without a service")
                            .expected("`service = \"NAME\"`, one of the host's services"),
                    );
                    continue;
                };
                if !spec.services.contains(name) {
                    if incomplete {
                        continue;
                    }
                    diags.push(
                        Diagnostic::at(
                            doc,
                            &format!("cron[{i}].service"),
                            format!(
                                "cron entry for `{name}`, which host `{}` does not run",
                                h.name
                            ),
                        )
                        .expected(format!(
                            "one of the host's services: {}",
                            list(&spec.services)
                        )),
                    );
                    continue;
                }
                let Some(svc) = model.service(name) else {
                    continue;
                };
                let backup = svc.spec.backup.as_ref().map(|b| b.kind);
                if matches!(task, CronTask::Backup | CronTask::Prune)
                    && !matches!(backup, Some(BackupKind::PgDump | BackupKind::Volumes))
                {
                    diags.push(
                        Diagnostic::at(doc, &format!("cron[{i}].service"), format!("{} cron entry for `{name}`, which declares no pg-dump or volumes backup", if task == CronTask::Prune { "prune" } else { "backup" }))
                            .expected("a service with `[backup] kind = \"pg-dump\"` or `\"volumes\"`"),
                    );
                }
                if task == CronTask::Health && svc.spec.health.is_none() {
                    diags.push(
                        Diagnostic::at(
                            doc,
                            &format!("cron[{i}].service"),
                            format!("health cron entry for `{name}`, which has no [health] check"),
                        )
                        .expected("a service with a [health] check"),
                    );
                }
            }
        }
    }
    for (i, name) in spec.libs.iter().enumerate() {
        if model.lib(name).is_none() && !model.unparsed.contains(name) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("libs[{i}]"),
                    format!("unknown library `{name}`"),
                )
                .expected(one_of(
                    model.libs.iter().map(|l| &l.name),
                    "a library defined in libs/NAME/lib.toml",
                )),
            );
        }
    }
}

fn lib(model: &Model, l: &Lib, doc: &Doc, diags: &mut Vec<Diagnostic>) {
    let spec = &l.spec;
    check_name(doc, &l.name, &spec.name, "library", diags);
    match &spec.source {
        Some(src) => source(model, doc, src, diags),
        None if spec.status == Status::Active => {
            diags.push(
                Diagnostic::at(doc, "name", "active library without a [source]")
                    .expected("a [source] with `git` + `rev` or `path`"),
            );
        }
        None => {}
    }
    if !is_inner_path(&spec.import_root) {
        diags.push(
            Diagnostic::at(
                doc,
                "import_root",
                format!("import root `{}` leaves the source", spec.import_root),
            )
            .expected("a relative path inside the source such as `src`"),
        );
    }
    if let Some(req) = &spec.requirements {
        if !is_inner_path(req) {
            diags.push(
                Diagnostic::at(
                    doc,
                    "requirements",
                    format!("requirements file `{req}` leaves the source"),
                )
                .expected("a relative path inside the source"),
            );
        }
    }
    for (i, p) in spec.packages.iter().enumerate() {
        // Package specs reach pip's argv: one that starts with `-` would be read as an option.
        let ok = !p.is_empty()
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.<>=!~,[]".contains(&b));
        if !ok {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("packages[{i}]"),
                    format!("invalid package requirement `{p}`"),
                )
                .expected("a requirement such as `pydantic>=2`"),
            );
        }
    }
    for (i, c) in spec.import_checks.iter().enumerate() {
        if !is_import(c) {
            diags.push(
                Diagnostic::at(
                    doc,
                    &format!("import_checks[{i}]"),
                    format!("invalid import `{c}`"),
                )
                .expected("`module.sub` or `module.sub:Attribute`"),
            );
        }
    }
}
