//! A host's cron entries as one /etc/cron.d file, and the health scripts its `health` entries
//! run.
//!
//! Cron hands each command line to the shell, but first it splits the file at line breaks and
//! turns every unescaped `%` into one. So descriptor values are quoted for the shell and then
//! escaped for cron, and a line break, which no quoting can carry through cron, is an error.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::{container_name, host_root, published_port, service, sh, sh_argv};
use crate::model::{
    BackupKind, Check, CommandCheck, CronEntry, CronTask, Host, HttpCheck, Method, Model, Service,
    ServiceKind,
};

/// cron runs the lines with bash for `pipefail`: without it `docker exec ... | gzip` succeeds
/// whenever gzip does, and a failed dump would leave an empty archive that looks like a backup.
/// (dash, Debian's /bin/sh, has no pipefail.)
const SHELL: &str = "/bin/bash";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Vixie cron (Debian's) silently cuts a command at 999 bytes: refuse longer ones instead.
const MAX_COMMAND: usize = 999;

/// Where the file goes. cron ignores files in cron.d whose names hold a `.`; host names are
/// `[a-z0-9-]`. The file must be owned by root and not writable by group or others.
pub fn path(host: &str) -> String {
    format!("/etc/cron.d/xtask-{host}")
}

/// Where the health script of `service` goes on the host (mode 0755; cron runs it with bash,
/// so a lost mode bit does not stop it).
pub fn health_script_path(model: &Model, host: &Host, service: &str) -> String {
    format!("{}/bin/health-{service}.sh", host_root(model, host))
}

/// The host's cron file: one line per `[[cron]]` entry, each under a comment naming it.
pub fn entries(model: &Model, host: &Host) -> Result<String> {
    let mut out = format!(
        "# Cron entries of host `{0}`, rendered by `cargo xtask` from hosts/{0}.toml.\n\
         # Do not edit: `cargo xtask up {0}` rewrites it.\n\
         SHELL={SHELL}\nPATH={PATH}\n",
        host.name
    );
    for entry in &host.spec.cron {
        let command = command(model, host, entry)
            .with_context(|| format!("cron entry `{}` of host `{}`", entry.name, host.name))?;
        out.push_str(&format!(
            "\n# {}: {}\n{} root {}\n",
            entry.name,
            what(entry),
            entry.schedule.trim(),
            crontab_command(&command).with_context(|| format!("cron entry `{}`", entry.name))?
        ));
    }
    Ok(out)
}

/// The health scripts the host's `health` entries run: `(path on the host, text)`.
pub fn health_scripts(model: &Model, host: &Host) -> Result<Vec<(String, String)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in &host.spec.cron {
        if let (CronTask::Health, Some(svc)) = (e.task, &e.service) {
            if seen.insert(svc.as_str()) {
                out.push((
                    health_script_path(model, host, svc),
                    health_script(model, host, svc)?,
                ));
            }
        }
    }
    Ok(out)
}

fn what(entry: &CronEntry) -> String {
    let svc = entry.service.as_deref().unwrap_or("?");
    match entry.task {
        CronTask::Backup => format!("back up {svc} to a dated file"),
        CronTask::Prune => format!("delete {svc}'s backups past their retention"),
        CronTask::Health => format!("check {svc}'s health, log and alert when it is down"),
        CronTask::Command => "run its command".to_string(),
    }
}

/// The shell command of one entry, before cron's escaping.
fn command(model: &Model, host: &Host, entry: &CronEntry) -> Result<String> {
    if entry.task == CronTask::Command {
        return sh_argv(&entry.command);
    }
    let name = entry.service.as_deref().context("no service")?;
    let s = service(model, name)?;
    let backups = format!("{}/{}/backups", host_root(model, host), s.name);
    match entry.task {
        CronTask::Backup => backup(host, s, &backups),
        CronTask::Prune => prune(s, &backups),
        CronTask::Health => Ok(format!(
            "/bin/bash {}",
            sh(&health_script_path(model, host, name))?
        )),
        CronTask::Command => unreachable!("handled above"),
    }
}

fn backup_kind(s: &Service) -> Result<BackupKind> {
    match s.spec.backup.as_ref().map(|b| b.kind) {
        Some(k @ (BackupKind::PgDump | BackupKind::Volumes)) => Ok(k),
        _ => bail!("`{}` declares no pg-dump or volumes backup", s.name),
    }
}

/// Dumps are private (umask 077: they hold every row, password hashes included) and written
/// to `NAME.part` first, so a failed or interrupted run never leaves a file that looks whole.
fn backup(host: &Host, s: &Service, dir: &str) -> Result<String> {
    let container = sh(&container_name(&host.name, &s.name))?;
    let mut parts = vec!["set -o pipefail".to_string(), "umask 077".to_string()];
    match backup_kind(s)? {
        BackupKind::PgDump => {
            let b = s.spec.backup.as_ref().context("no [backup]")?;
            let user = env_name(b.user_env.as_deref().unwrap_or("POSTGRES_USER"))?;
            let db = env_name(b.database_env.as_deref().unwrap_or("POSTGRES_DB"))?;
            // The user and database are read inside the container from its own environment,
            // so the cron file names no database credentials.
            let dump = format!("pg_dump -U \"${user}\" \"${db}\"");
            let producer = format!("docker exec {container} sh -c {} | gzip", sh(&dump)?);
            parts.push(dated(dir, &s.name, ".sql.gz", &producer, &s.name)?);
        }
        _ => {
            let volumes: Vec<_> = s.spec.run.iter().flat_map(|r| &r.volumes).collect();
            if volumes.is_empty() {
                bail!("`{}` has a volumes backup but no run.volumes", s.name);
            }
            for v in volumes {
                let producer =
                    format!("docker exec {container} tar -C {} -czf - .", sh(&v.target)?);
                let stem = format!("{}-{}", s.name, v.name);
                parts.push(dated(dir, &stem, ".tar.gz", &producer, &s.name)?);
            }
        }
    }
    Ok(parts.join("; "))
}

/// `producer > DIR/STEM-YYYY-MM-DD.EXT`, atomically; on failure: syslog and exit 1.
fn dated(dir: &str, stem: &str, ext: &str, producer: &str, service: &str) -> Result<String> {
    Ok(format!(
        "d={}; f=\"$d/\"{}\"-$(date +%F){ext}\"; mkdir -p \"$d\" && {producer} > \"$f.part\" \
         && mv \"$f.part\" \"$f\" || {{ rm -f \"$f.part\"; logger -t xtask-backup {}; exit 1; }}",
        sh(dir)?,
        sh(stem)?,
        sh(&format!("backup of {service} failed"))?
    ))
}

fn prune(s: &Service, dir: &str) -> Result<String> {
    let pattern = match backup_kind(s)? {
        BackupKind::PgDump => "*.sql.gz",
        _ => "*.tar.gz",
    };
    let days = s
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.retention_days)
        .with_context(|| format!("`{}`'s [backup] has no retention_days", s.name))?;
    // -mtime +N: modified more than N whole days ago, so N+1 daily dumps stay.
    Ok(format!(
        "find {} -type f -name {} -mtime +{days} -delete",
        sh(dir)?,
        sh(pattern)?
    ))
}

/// Env names go into a shell script as `"$NAME"`: only names that cannot be anything else.
fn env_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!("invalid environment variable name `{name}` in [backup]");
    }
    Ok(name)
}

/// A shell command as cron's command field: `%` escaped as `\%` (cron turns a bare one into a
/// line break and feeds the rest to stdin).
///
/// Cron reads `\%` as `%` and leaves any other backslash alone, so a `\` that precedes a `%` in
/// a value cannot be written directly. Such a backslash can only come from a value, which sits
/// inside single quotes: an empty `''` (close and reopen the quote) goes between the two.
fn crontab_command(cmd: &str) -> Result<String> {
    if cmd.contains(['\n', '\r']) {
        bail!("a value holds a line break, which a cron line cannot carry");
    }
    let mut out = String::with_capacity(cmd.len() + 8);
    let mut prev = None;
    for c in cmd.chars() {
        if c == '%' {
            if prev == Some('\\') {
                out.push_str("''");
            }
            out.push('\\');
        }
        out.push(c);
        prev = Some(c);
    }
    if out.len() > MAX_COMMAND {
        bail!(
            "the command is {} bytes, more than cron's {MAX_COMMAND}",
            out.len()
        );
    }
    Ok(out)
}

/// The script a `health` entry runs: checks the service the way its [health] check says,
/// and when it fails, logs `<service> is down` to syslog (tag `xtask-health`), prints it (cron
/// mails output where mail is set up) and exits 1.
pub fn health_script(model: &Model, host: &Host, name: &str) -> Result<String> {
    let s = service(model, name)?;
    let check = &s
        .spec
        .health
        .as_ref()
        .with_context(|| format!("`{name}` has no [health] check"))?
        .check;
    if s.spec.kind != ServiceKind::Container {
        bail!(
            "`{name}` is a `{}` service: cron checks only containers",
            s.spec.kind.as_str()
        );
    }
    let container = container_name(&host.name, name);
    let mut out = format!(
        "#!/bin/bash\n\
         # Health check of `{name}` on host `{host}`, rendered by `cargo xtask` from\n\
         # services/{name}/service.toml. Do not edit: `cargo xtask up {host}` rewrites it.\n\
         set -u\n\
         service={}\n\
         container={}\n\
         \n\
         down() {{\n    \
             echo \"$service is down: $1\" >&2\n    \
             logger -t xtask-health \"$service is down: $1\"\n    \
             exit 1\n\
         }}\n\
         \n\
         [ \"$(docker inspect -f '{{{{.State.Running}}}}' \"$container\" 2>/dev/null)\" = true ] ||\n    \
             down \"container $container is not running\"\n",
        sh(name)?,
        sh(&container)?,
        host = host.name,
    );
    let body = match check {
        Check::Http(h) => http(s, h)?,
        Check::Tcp(t) => format!(
            "{}timeout 10 bash -c ': <>\"/dev/tcp/$0/$1\"' \"$addr\" \"$port\" 2>/dev/null ||\n    \
             down \"port $port accepts no connection\"\n",
            address(s, t.port)?
        ),
        Check::Command(c) => command_check(c)?,
        other => bail!(
            "`{name}`'s health check is of type `{}`, which cron cannot run (http, tcp or command)",
            other.type_name()
        ),
    };
    out.push_str(&body);
    Ok(out)
}

/// Sets `addr` and `port` for a check on a container port: the published host port on
/// loopback, or the container's own address on its network when the port is not published.
fn address(s: &Service, port: u16) -> Result<String> {
    Ok(match published_port(s, port) {
        Some(hp) => format!("addr=127.0.0.1\nport={}\n", sh(&hp.to_string())?),
        None => format!(
            "# Port {port} is not published on the host: reach it at the container's address.\n\
             addr=$(docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} {{{{end}}}}' \"$container\")\n\
             addr=${{addr%% *}}\n\
             [ -n \"$addr\" ] || down \"container $container has no IP address\"\n\
             port={}\n",
            sh(&port.to_string())?
        ),
    })
}

fn http(s: &Service, h: &HttpCheck) -> Result<String> {
    let uses_capture = |v: &str| v.contains("${");
    if h.headers.values().any(|v| uses_capture(v))
        || h.body
            .as_ref()
            .is_some_and(|b| uses_capture(&b.to_string()))
    {
        bail!(
            "`{}`'s health check uses values captured by earlier checks, which cron does not have",
            s.name
        );
    }
    let mut opts = String::new();
    let method = match h.method {
        Method::Get => None,
        Method::Post => Some("POST"),
        Method::Put => Some("PUT"),
        Method::Delete => Some("DELETE"),
    };
    if let Some(m) = method {
        opts.push_str(&format!(" -X {m}"));
    }
    for (k, v) in &h.headers {
        opts.push_str(&format!(" -H {}", sh(&format!("{k}: {v}"))?));
    }
    if let Some(body) = &h.body {
        let json = serde_json::to_string(body)?;
        opts.push_str(&format!(
            " -H 'Content-Type: application/json' --data-binary {}",
            sh(&json)?
        ));
    }
    let note = if h.json.is_empty() && h.json_fields.is_empty() {
        ""
    } else {
        "# Only the status is checked here; `cargo xtask up` also checks the JSON answer.\n"
    };
    // -g: no URL globbing, so `[`, `]`, `{`, `}` in the path are literal.
    Ok(format!(
        "{}{note}code=$(curl -sS -g -o /dev/null -w '%{{http_code}}' --max-time 10{opts} \
         \"http://$addr:$port\"{}) ||\n    down \"no HTTP answer on port $port\"\n\
         [ \"$code\" = {} ] || down \"HTTP $code, expected {}\"\n",
        address(s, h.port)?,
        sh(&h.path)?,
        sh(&h.status.to_string())?,
        h.status
    ))
}

fn command_check(c: &CommandCheck) -> Result<String> {
    let mut out = format!(
        "out=$(timeout 30 docker exec \"$container\" {})\n\
         rc=$?\n\
         [ \"$rc\" = {} ] || down \"check command exited with $rc, expected {}\"\n",
        sh_argv(&c.command)?,
        sh(&c.exit_code.to_string())?,
        c.exit_code
    );
    if let Some(text) = &c.stdout_contains {
        out.push_str(&format!(
            "printf '%s' \"$out\" | grep -qF -e {} || down \"check output lacks the expected text\"\n",
            sh(text)?
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// What vixie cron does to a command field before the shell sees it: `\%` becomes `%`,
    /// a bare `%` ends the command (the rest is stdin), other backslashes stay.
    fn as_cron_runs_it(field: &str) -> String {
        let mut out = String::new();
        let mut escaped = false;
        for c in field.chars() {
            if escaped {
                if c == '%' {
                    out.pop();
                }
                out.push(c);
                escaped = false;
                continue;
            }
            if c == '%' {
                break;
            }
            escaped = c == '\\';
            out.push(c);
        }
        out
    }

    fn run_as_cron(field: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(as_cron_runs_it(field))
            .output()
            .unwrap();
        assert!(out.status.success(), "{field}\n{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    const DB: &str = r#"
name = "db"
description = "d"
status = "active"
kind = "container"
[run]
ports = [{ container = 5432 }]
volumes = [{ name = "data", target = "/var/lib/data dir" }]
[health]
check = { type = "tcp", port = 5432 }
[backup]
kind = "pg-dump"
schedule = "0 2 * * *"
retention_days = 30
database_env = "APP_DB"
"#;

    fn host_toml(root: &str, cron: &str) -> String {
        format!(
            "name = \"box\"\ndescription = \"d\"\nreach = \"ssh\"\nssh = \"u@h\"\n\
             root = {root:?}\nservices = [\"db\"]\n{cron}"
        )
    }

    const BACKUP_AND_PRUNE: &str = "[[cron]]\nname = \"backup-db\"\nschedule = \"0 2 * * *\"\n\
        task = \"backup\"\nservice = \"db\"\n\
        [[cron]]\nname = \"prune-db\"\nschedule = \"0 3 * * *\"\ntask = \"prune\"\nservice = \"db\"\n";

    fn line_of<'t>(file: &'t str, name: &str) -> &'t str {
        let mut lines = file.lines();
        lines.find(|l| l.starts_with(&format!("# {name}:")));
        lines.next().unwrap()
    }

    #[test]
    fn fixture_testbox_cron_file() {
        let m = fixture();
        let text = entries(&m, host(&m, "testbox")).unwrap();
        assert!(text.contains("\nSHELL=/bin/bash\nPATH="), "{text}");
        let backup = line_of(&text, "backup-notes");
        assert!(
            backup.starts_with("0 2 * * * root set -o pipefail; umask 077; "),
            "{backup}"
        );
        assert!(
            backup.contains(
                "d='/srv/services/notes-db/backups'; f=\"$d/\"'notes-db'\"-$(date +\\%F).sql.gz\""
            ),
            "{backup}"
        );
        assert!(
            backup.contains("docker exec 'xtask-testbox-notes-db' sh -c 'pg_dump -U \"$POSTGRES_USER\" \"$POSTGRES_DB\"' | gzip > \"$f.part\" && mv \"$f.part\" \"$f\""),
            "{backup}"
        );
        let prune = line_of(&text, "prune-notes");
        assert_eq!(
            prune,
            "0 3 * * * root find '/srv/services/notes-db/backups' -type f -name '*.sql.gz' -mtime +30 -delete"
        );
        let health = line_of(&text, "health-notes-api");
        assert_eq!(
            health,
            "*/5 * * * * root /bin/bash '/srv/services/bin/health-notes-api.sh'"
        );
        assert!(text.ends_with('\n'));
        // No secret value or name of one reaches the file.
        assert!(!text.contains("POSTGRES_PASSWORD"), "{text}");
    }

    #[test]
    fn backup_env_names_come_from_the_descriptor() {
        let h = host_toml("/opt/s", BACKUP_AND_PRUNE);
        let m = inline(&[DB], &[&h]);
        let text = entries(&m, host(&m, "box")).unwrap();
        assert!(
            text.contains(r#"sh -c 'pg_dump -U "$POSTGRES_USER" "$APP_DB"'"#),
            "{text}"
        );
    }

    #[test]
    fn invalid_backup_env_name_is_an_error() {
        let db = DB.replace("\"APP_DB\"", "\"X\\\"; reboot; \\\"\"");
        let h = host_toml("/opt/s", BACKUP_AND_PRUNE);
        let m = inline(&[&db], &[&h]);
        let err = format!("{:#}", entries(&m, host(&m, "box")).unwrap_err());
        assert!(err.contains("invalid environment variable name"), "{err}");
    }

    /// A root with spaces, `$`, quotes, `%` and a backslash before `%` survives quoting and
    /// cron's escaping: the shell sees exactly the path.
    #[test]
    fn hostile_root_reaches_the_shell_intact() {
        let root = r#"/srv/my $HOME 'x' "y" `id` 50% a\%b"#;
        let h = host_toml(root, BACKUP_AND_PRUNE);
        let m = inline(&[DB], &[&h]);
        let text = entries(&m, host(&m, "box")).unwrap();
        let prune = line_of(&text, "prune-db")
            .strip_prefix("0 3 * * * root ")
            .unwrap();
        // Run the line as cron would, with `find` a function that prints its first argument.
        let field = format!("find() {{ printf '\\%s' \"$1\"; }}; {prune}");
        assert_eq!(run_as_cron(&field), format!("{root}/db/backups"));
    }

    #[test]
    fn percent_and_backslash_percent_round_trip_through_cron() {
        for value in ["50%", r"a\%b", r"\\%", "%%", "'%'", "100% $(id)"] {
            let cmd = sh_argv(&["printf", "%s", value]).unwrap();
            let field = crontab_command(&cmd).unwrap();
            assert!(!as_cron_runs_it(&field).is_empty());
            assert_eq!(run_as_cron(&field), value, "{field}");
        }
    }

    #[test]
    fn the_backup_date_survives_cron() {
        let field = crontab_command("echo \"x-$(date +%F).sql.gz\"").unwrap();
        let out = run_as_cron(&field);
        assert!(
            out.starts_with("x-20") && out.trim_end().ends_with(".sql.gz"),
            "{out}"
        );
    }

    #[test]
    fn line_breaks_cannot_reach_a_cron_line() {
        let h = host_toml(
            "/opt/s",
            "[[cron]]\nname = \"c\"\nschedule = \"* * * * *\"\ntask = \"command\"\n\
             command = [\"echo\", \"x\\n* * * * * root reboot\"]\n",
        );
        let m = inline(&[DB], &[&h]);
        let err = format!("{:#}", entries(&m, host(&m, "box")).unwrap_err());
        assert!(err.contains("line break"), "{err}");
    }

    #[test]
    fn command_entries_are_quoted_argv() {
        let h = host_toml(
            "/opt/s",
            "[[cron]]\nname = \"audit\"\nschedule = \"0 2 * * *\"\ntask = \"command\"\n\
             command = [\"/usr/local/bin/audit\", \"--to\", \"/var/log/a b\", \"$(id)\"]\n",
        );
        let m = inline(&[DB], &[&h]);
        let text = entries(&m, host(&m, "box")).unwrap();
        assert_eq!(
            line_of(&text, "audit"),
            "0 2 * * * root '/usr/local/bin/audit' '--to' '/var/log/a b' '$(id)'"
        );
    }

    #[test]
    fn too_long_lines_are_refused() {
        let long = "x".repeat(1200);
        assert!(crontab_command(&long).is_err());
    }

    #[test]
    fn volumes_backup_tars_each_volume() {
        let db = DB.replace("kind = \"pg-dump\"", "kind = \"volumes\"");
        let h = host_toml("/opt/s", BACKUP_AND_PRUNE);
        let m = inline(&[&db], &[&h]);
        let text = entries(&m, host(&m, "box")).unwrap();
        let backup = line_of(&text, "backup-db");
        assert!(
            backup.contains(
                "docker exec 'xtask-box-db' tar -C '/var/lib/data dir' -czf - . > \"$f.part\""
            ),
            "{backup}"
        );
        assert!(
            backup.contains("'db-data'\"-$(date +\\%F).tar.gz\""),
            "{backup}"
        );
        assert!(line_of(&text, "prune-db").contains("-name '*.tar.gz'"));
    }

    /// The backup line really writes a dated gzip file and leaves no `.part` behind; and a
    /// failing dump leaves no archive at all (pipefail). `docker` is a stub here.
    #[test]
    fn backup_line_writes_a_dated_archive_only_on_success() {
        let tmp = std::env::temp_dir().join(format!("xtask-render-cron-{}", std::process::id()));
        let bin = tmp.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = bin.join("docker");
        std::fs::write(bin.join("logger"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("logger"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let root = tmp.join("root $x");
        let h = host_toml(root.to_str().unwrap(), BACKUP_AND_PRUNE);
        let m = inline(&[DB], &[&h]);
        let text = entries(&m, host(&m, "box")).unwrap();
        let field = line_of(&text, "backup-db")
            .strip_prefix("0 2 * * * root ")
            .unwrap()
            .to_string();
        let run = |stub_body: &str| {
            std::fs::write(&stub, format!("#!/bin/sh\n{stub_body}\n")).unwrap();
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::process::Command::new("bash")
                .arg("-c")
                .arg(as_cron_runs_it(&field))
                .env("PATH", format!("{}:/usr/bin:/bin", bin.to_str().unwrap()))
                .output()
                .unwrap()
        };
        let dir = root.join("db/backups");
        // A failing dump: exit 1, nothing left.
        let out = run("echo 'partial dump'; exit 1");
        assert!(!out.status.success());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{out:?}");
        // A good dump: one dated .sql.gz whose content is the dump.
        let out = run("echo \"dump of $*\"");
        assert!(out.status.success(), "{out:?}");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("db-20") && files[0].ends_with(".sql.gz"));
        let gz = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(dir.join(&files[0]))
            .output()
            .unwrap();
        let dump = String::from_utf8(gz.stdout).unwrap();
        assert!(
            dump.starts_with("dump of exec xtask-box-db sh -c pg_dump"),
            "{dump}"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn health_script_http_on_published_port() {
        let m = fixture();
        let s = health_script(&m, host(&m, "testbox"), "notes-api").unwrap();
        assert!(s.starts_with("#!/bin/bash\n"), "{s}");
        assert!(s.contains("container='xtask-testbox-notes-api'\n"), "{s}");
        assert!(s.contains("addr=127.0.0.1\nport='18080'\n"), "{s}");
        assert!(
            s.contains("curl -sS -g -o /dev/null -w '%{http_code}' --max-time 10 \"http://$addr:$port\"'/health')"),
            "{s}"
        );
        assert!(s.contains("[ \"$code\" = '200' ]"), "{s}");
        assert!(
            s.contains("logger -t xtask-health \"$service is down: $1\""),
            "{s}"
        );
        assert_script_parses(&s);
    }

    #[test]
    fn health_script_command_runs_in_the_container() {
        let m = fixture();
        let s = health_script(&m, host(&m, "testbox"), "notes-db").unwrap();
        assert!(
            s.contains("out=$(timeout 30 docker exec \"$container\" 'pg_isready' '-h' '127.0.0.1' '-U' 'notes' '-d' 'notes')\n"),
            "{s}"
        );
        assert!(s.contains("[ \"$rc\" = '0' ]"), "{s}");
        assert_script_parses(&s);
    }

    #[test]
    fn health_script_tcp_on_unpublished_port_uses_the_container_address() {
        let h = host_toml("/opt/s", "");
        let m = inline(&[DB], &[&h]);
        let s = health_script(&m, host(&m, "box"), "db").unwrap();
        assert!(
            s.contains("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"),
            "{s}"
        );
        assert!(s.contains("port='5432'\n"), "{s}");
        assert!(
            s.contains("timeout 10 bash -c ': <>\"/dev/tcp/$0/$1\"' \"$addr\" \"$port\""),
            "{s}"
        );
        assert_script_parses(&s);
    }

    /// The script's logic with `docker`, `curl` and `logger` stubbed: down means exit 1 and a
    /// syslog line naming the service; up means exit 0 and silence.
    #[test]
    fn health_script_reports_down_and_up() {
        let m = fixture();
        let script = health_script(&m, host(&m, "testbox"), "notes-api").unwrap();
        let tmp = std::env::temp_dir().join(format!("xtask-render-health-{}", std::process::id()));
        let bin = tmp.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let log = tmp.join("log");
        stub("docker", "echo true");
        stub("logger", &format!("echo \"$*\" >> '{}'", log.display()));
        let run = || {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap()
        };
        stub("curl", "printf 200");
        let out = run();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{out:?}"
        );
        assert!(!log.exists());
        stub("curl", "printf 503");
        let out = run();
        assert_eq!(out.status.code(), Some(1));
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            logged,
            "-t xtask-health notes-api is down: HTTP 503, expected 200\n"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn health_script_refuses_checks_cron_cannot_run() {
        let mcp = r#"
name = "m"
description = "d"
status = "active"
kind = "container"
[run]
[health]
check = { type = "python-import", import = "x" }
"#;
        let m = inline(&[mcp], &[&host_toml("/opt/s", "")]);
        assert!(health_script(&m, host(&m, "box"), "m").is_err());
    }

    #[test]
    fn health_scripts_lists_one_per_checked_service() {
        let m = fixture();
        let v = health_scripts(&m, host(&m, "testbox")).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "/srv/services/bin/health-notes-api.sh");
    }

    #[test]
    fn repo_homelab_cron_covers_backup_prune_and_health() {
        let m = repo();
        let h = host(&m, "homelab");
        let text = entries(&m, h).unwrap();
        assert!(line_of(&text, "backup-ai-cost-tracker-db").starts_with("0 2 * * * root "));
        assert!(line_of(&text, "prune-ai-cost-tracker-db").contains("-mtime +30 -delete"));
        for svc in [
            "ai-cost-tracker-db",
            "ai-cost-tracker-api",
            "ai-cost-tracker-dashboard",
        ] {
            let line = line_of(&text, &format!("health-{svc}"));
            assert!(line.starts_with("*/5 * * * * root /bin/bash "), "{line}");
            let script = health_script(&m, h, svc).unwrap();
            assert_script_parses(&script);
        }
        let scripts = health_scripts(&m, h).unwrap();
        assert_eq!(scripts.len(), 3);
    }

    fn assert_script_parses(script: &str) {
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}\n{out:?}");
    }
}
