//! Host integrations that live outside the services' folders: the nginx site, the cron file
//! and the firewall rules. They are always rendered under the host's root (so `plan` sees them
//! and a human can read them) and applied where the host has the program and `up` runs as
//! root (as nginx and cron need); otherwise `up` says where the rendered file is. The applied
//! copies are observed too: one that was removed or edited in /etc is applied again, as is a
//! firewall chain for Docker's ports that a reboot dropped. `down` removes both the rendered
//! files and the applied copies.

use anyhow::Result;

use super::apply::Ctx;
use super::desired::{Desired, DesiredFile};
use crate::model::{Host, Model};
use crate::render;
use crate::target::Target;

pub const NGINX: &str = "nginx site";
pub const CRON: &str = "cron entries";
pub const UFW: &str = "firewall rules";

/// The rendered files of a host, added to its desired state.
pub fn files(model: &Model, host: &Host, root: &str, d: &mut Desired) -> Result<()> {
    let name = &host.name;
    if let Some(site) = render::nginx::site(model, host)? {
        let path = format!("{root}/rendered/nginx-xtask-{name}.conf");
        d.applied.insert(
            path.clone(),
            ("nginx".into(), render::nginx::path(&host.name)),
        );
        d.files.push(DesiredFile {
            path,
            content: site.into_bytes(),
            mode: 0o644,
            what: NGINX.into(),
        });
    }
    if !host.spec.cron.is_empty() {
        let text = render::cron::entries(model, host)?;
        let path = format!("{root}/rendered/cron-xtask-{name}");
        d.applied.insert(
            path.clone(),
            ("cron".into(), render::cron::path(&host.name)),
        );
        d.files.push(DesiredFile {
            path,
            content: text.into_bytes(),
            mode: 0o644,
            what: CRON.into(),
        });
        for (path, script) in render::cron::health_scripts(model, host)? {
            d.files.push(DesiredFile {
                path,
                content: script.into_bytes(),
                mode: 0o755,
                what: "health check script".into(),
            });
        }
    }
    if !host.spec.firewall.is_empty() {
        let text = render::ufw::script(model, host)?;
        d.files.push(DesiredFile {
            path: format!("{root}/rendered/ufw-xtask-{name}.sh"),
            content: text.into_bytes(),
            mode: 0o755,
            what: UFW.into(),
        });
    }
    Ok(())
}

/// What the host offers, asked in one round trip.
struct Capabilities {
    nginx: bool,
    cron: bool,
    ufw: bool,
}

/// nginx and cron need root, not only a writable directory: reloading nginx signals its
/// root-owned master, and cron ignores a file in /etc/cron.d that root does not own.
/// Prints a line per program whose integration `up` can apply: `nginx`, `cron`, `ufw`.
pub const CAPABILITIES: &str = "if [ \"$(id -u)\" = 0 ]; then\n\
     command -v nginx >/dev/null 2>&1 && test -w /etc/nginx/conf.d && echo nginx\n\
     test -d /etc/cron.d && test -w /etc/cron.d && echo cron\n\
     command -v ufw >/dev/null 2>&1 && echo ufw\n\
     fi\n\
     true\n";

fn capabilities(ctx: &Ctx<'_>) -> Capabilities {
    let out = ctx
        .target
        .run_ok(&["sh", "-c", CAPABILITIES])
        .unwrap_or_default();
    Capabilities {
        nginx: out.lines().any(|l| l == "nginx"),
        cron: out.lines().any(|l| l == "cron"),
        ufw: out.lines().any(|l| l == "ufw"),
    }
}

/// Installs the nginx site and reloads nginx; a site that `nginx -t` refuses is taken back
/// (the previous one restored, or none), so a later reload by anyone does not fail on it.
fn apply_nginx(ctx: &Ctx<'_>, host: &Host, content: &[u8]) -> Result<()> {
    let path = render::nginx::path(&host.name);
    let before = ctx.target.read_file(&path)?;
    ctx.target.write_file(&path, content, 0o644)?;
    let test = ctx.target.run(&["nginx", "-t"])?;
    if !test.status.success() {
        match &before {
            Some(old) => ctx.target.write_file(&path, old, 0o644)?,
            None => {
                ctx.target.run_ok(&["rm", "-f", &path])?;
            }
        }
        anyhow::bail!(
            "nginx refused the new site {path} (it was taken back):\n{}",
            crate::proc::tail(&String::from_utf8_lossy(&test.stderr), 10)
        );
    }
    ctx.target.run_ok(&["nginx", "-s", "reload"])?;
    Ok(())
}

/// Applies the integrations whose rendered file `up` just wrote.
pub fn apply(ctx: &Ctx<'_>, changed: &[&DesiredFile], host: &Host) -> Result<()> {
    if !changed
        .iter()
        .any(|f| [NGINX, CRON, UFW].contains(&f.what.as_str()))
    {
        return Ok(());
    }
    let caps = capabilities(ctx);
    for f in changed {
        match f.what.as_str() {
            NGINX if caps.nginx => {
                apply_nginx(ctx, host, &f.content)?;
                ctx.progress.line("nginx site applied and nginx reloaded");
            }
            CRON if caps.cron => {
                ctx.target.write_file(&render::cron::path(&host.name), &f.content, 0o644)?;
                ctx.progress.line("cron entries applied");
            }
            UFW if caps.ufw => {
                for argv in render::ufw::rules(ctx.model, host) {
                    ctx.target.run_ok(&argv)?;
                }
                ctx.progress.line("firewall rules applied");
                ctx.progress.line(&apply_docker_user(ctx.target, host)?);
            }
            NGINX | CRON | UFW => ctx.progress.line(&format!(
                "{} rendered at {} (not applied: the host lacks the program, or `up` does not run as root there)",
                f.what, f.path
            )),
            _ => {}
        }
    }
    Ok(())
}

/// The firewall rules for the ports Docker publishes, which ufw does not see; says what it did.
pub fn apply_docker_user(target: &Target, host: &Host) -> Result<String> {
    let chain = render::ufw::docker_chain(host);
    let out = target.run_input(
        &["sh", "-c", render::ufw::DOCKER_APPLY, "sh", &chain],
        render::ufw::docker_rules(host).as_bytes(),
    )?;
    if !out.status.success() {
        anyhow::bail!(
            "the firewall rules for Docker's published ports were not applied (chain {chain}):\n{}",
            crate::proc::tail(&String::from_utf8_lossy(&out.stderr), 10)
        );
    }
    Ok(
        if String::from_utf8_lossy(&out.stdout).contains("no-docker-user") {
            "no DOCKER-USER chain on the host (Docker not running?): rules for published ports not applied".into()
        } else {
            format!("firewall rules for Docker's published ports applied (chain {chain}, from DOCKER-USER)")
        },
    )
}

/// Removes each existing file of `$@` and prints the ones it removed; a file it may not remove
/// is reported on stderr and makes the exit code 1 after the others were tried.
const REMOVE: &str = r#"rc=0
for f in "$@"; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    if rm -f -- "$f"; then printf '%s\n' "$f"; else rc=1; fi
  fi
done
exit $rc
"#;

/// The files of the integrations that `down` removes: the rendered files and health scripts
/// under the host's root, and the copies `up` applies to /etc.
pub fn paths(model: &Model, host: &Host, root: &str) -> Result<Vec<String>> {
    let mut d = Desired::default();
    files(model, host, root, &mut d)?;
    let mut paths: Vec<String> = d.files.iter().map(|f| f.path.clone()).collect();
    if d.files.iter().any(|f| f.what == NGINX) {
        paths.push(render::nginx::path(&host.name));
    }
    if d.files.iter().any(|f| f.what == CRON) {
        paths.push(render::cron::path(&host.name));
    }
    Ok(paths)
}

/// Removes those of `paths` that exist, in one round trip, then reloads nginx when its site
/// went. Firewall rules stay: removing a rule could lock the operator out. Returns what it
/// did, in words.
pub fn remove(host: &Host, paths: &[String], target: &Target) -> Result<Vec<String>> {
    let mut said = Vec::new();
    if !paths.is_empty() {
        let mut argv = vec!["sh".to_string(), "-c".into(), REMOVE.into(), "sh".into()];
        argv.extend(paths.iter().cloned());
        let out = target.run(&argv)?;
        let removed = String::from_utf8_lossy(&out.stdout).into_owned();
        said.extend(removed.lines().map(|p| format!("removed {p}")));
        if !out.status.success() {
            said.push(format!(
                "could not remove some files on {}: {}",
                target.name(),
                crate::proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
            ));
        }
        if removed
            .lines()
            .any(|l| l == render::nginx::path(&host.name))
        {
            match target.run_ok(&["nginx", "-s", "reload"]) {
                Ok(_) => said.push("nginx reloaded".into()),
                Err(e) => said.push(format!("nginx not reloaded: {e:#}")),
            }
        }
    }
    if !host.spec.firewall.is_empty() {
        said.push(
            format!(
                "firewall rules, if `up` applied them, stay in place (`ufw delete` removes a rule; `iptables -D DOCKER-USER -j {0}`, `iptables -F {0}`, `iptables -X {0}` the chain for Docker's ports)",
                render::ufw::docker_chain(host)
            ),
        );
    }
    Ok(said)
}
