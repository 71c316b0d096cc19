//! Host integrations that live outside the services' folders: the nginx site, the cron file
//! and the firewall rules. They are always rendered under the host's root (so `plan` sees them
//! and a human can read them) and applied where the host has the program and `up` may write
//! its configuration; otherwise `up` says where the rendered file is.

use anyhow::Result;

use super::apply::Ctx;
use super::desired::{Desired, DesiredFile};
use crate::model::{Host, Model};
use crate::render;

pub const NGINX: &str = "nginx site";
pub const CRON: &str = "cron entries";
pub const UFW: &str = "firewall rules";

/// The rendered files of a host, added to its desired state.
pub fn files(model: &Model, host: &Host, root: &str, d: &mut Desired) -> Result<()> {
    let name = &host.name;
    if let Some(site) = render::nginx::site(model, host)? {
        d.files.push(DesiredFile {
            path: format!("{root}/rendered/nginx-xtask-{name}.conf"),
            content: site.into_bytes(),
            mode: 0o644,
            what: NGINX.into(),
        });
    }
    if !host.spec.cron.is_empty() {
        let text = render::cron::entries(model, host)?;
        d.files.push(DesiredFile {
            path: format!("{root}/rendered/cron-xtask-{name}"),
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

fn capabilities(ctx: &Ctx<'_>) -> Capabilities {
    let script = "command -v nginx >/dev/null 2>&1 && test -w /etc/nginx/conf.d && echo nginx\n\
                  test -d /etc/cron.d && test -w /etc/cron.d && echo cron\n\
                  command -v ufw >/dev/null 2>&1 && [ \"$(id -u)\" = 0 ] && echo ufw\n\
                  true";
    let out = ctx.target.run_ok(&["sh", "-c", script]).unwrap_or_default();
    Capabilities {
        nginx: out.lines().any(|l| l == "nginx"),
        cron: out.lines().any(|l| l == "cron"),
        ufw: out.lines().any(|l| l == "ufw"),
    }
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
                ctx.target.write_file(&render::nginx::path(&host.name), &f.content, 0o644)?;
                ctx.target.run_ok(&["nginx", "-t"])?;
                ctx.target.run_ok(&["nginx", "-s", "reload"])?;
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
            }
            NGINX | CRON | UFW => ctx.progress.line(&format!(
                "{} rendered at {} (not applied: the host lacks the program or `up` may not write its configuration)",
                f.what, f.path
            )),
            _ => {}
        }
    }
    Ok(())
}
