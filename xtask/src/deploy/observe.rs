//! What runs on a host now, in one batched round trip: the containers, volumes and networks
//! with the project's labels for this host, and the hashes of the files `up` manages.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::desired::*;
use crate::target::{quote, Target};

#[derive(Debug, Clone)]
pub struct ActualContainer {
    pub name: String,
    pub service: String,
    pub running: bool,
    pub hash: String,
    pub image_hash: String,
    pub env_hash: String,
    pub run_hash: String,
    pub image: String,
    pub previous_image: String,
}

#[derive(Debug, Clone, Default)]
pub struct Actual {
    pub containers: Vec<ActualContainer>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    /// Path -> sha256 of the file on the host (absent: no such file).
    pub files: BTreeMap<String, String>,
    /// The host could hold the firewall chain for Docker's published ports (root, ufw and
    /// Docker's DOCKER-USER chain are there) and it is not loaded: after a reboot, say, as
    /// iptables rules outside ufw's own do not survive one.
    pub firewall_missing: bool,
    /// The programs whose integration `up` can apply on the host (see
    /// [`super::integrate::CAPABILITIES`]).
    pub can_apply: std::collections::BTreeSet<String>,
}

const SEP: &str = "@@xtask@@";

/// One shell program, every dynamic part quoted, run in one `sh -c` on the target.
/// `firewall` is the chain for Docker's published ports, when the host has firewall rules.
pub fn observe(
    target: &Target,
    host: &str,
    file_paths: &[String],
    firewall: Option<&str>,
) -> Result<Actual> {
    let filter = quote::quote(&format!("label={HOST_LABEL}={host}"))?;
    let format = quote::quote(&format!(
        "{{{{.Names}}}}\t{{{{.State}}}}\t{{{{.Label \"{SERVICE_LABEL}\"}}}}\t{{{{.Label \"{HASH_LABEL}\"}}}}\t{{{{.Label \"{IMAGE_HASH_LABEL}\"}}}}\t{{{{.Label \"{ENV_HASH_LABEL}\"}}}}\t{{{{.Label \"{RUN_HASH_LABEL}\"}}}}\t{{{{.Image}}}}\t{{{{.Label \"{PREVIOUS_LABEL}\"}}}}"
    ))?;
    let mut script = format!(
        "echo {SEP}containers; docker ps -a --no-trunc --filter {filter} --format {format} || exit 3\n\
         echo {SEP}volumes; docker volume ls -q --filter {filter} || exit 3\n\
         echo {SEP}networks; docker network ls --format '{{{{.Name}}}}' --filter {filter} || exit 3\n\
         echo {SEP}files\n"
    );
    for p in file_paths {
        let q = quote::quote(p)?;
        script.push_str(&format!(
            "if [ -f {q} ]; then printf '%s\\t' {q}; sha256sum < {q} | cut -d' ' -f1; fi\n"
        ));
    }
    script.push_str(&format!("echo {SEP}caps\n"));
    script.push_str(super::integrate::CAPABILITIES);
    if let Some(chain) = firewall {
        let q = quote::quote(chain)?;
        script.push_str(&format!(
            "echo {SEP}firewall\n\
             if [ \"$(id -u)\" = 0 ] && command -v ufw >/dev/null 2>&1 \\\n\
             && iptables -w -n -L DOCKER-USER >/dev/null 2>&1 \\\n\
             && ! iptables -w -n -L {q} >/dev/null 2>&1; then echo missing; fi\n"
        ));
    }
    let out = target
        .run_ok(&["sh", "-c", &script])
        .context("observe the host")?;
    parse(&out)
}

fn parse(out: &str) -> Result<Actual> {
    let mut actual = Actual::default();
    let mut section = "";
    for line in out.lines() {
        if let Some(s) = line.strip_prefix(SEP) {
            section = match s {
                "containers" => "containers",
                "volumes" => "volumes",
                "networks" => "networks",
                "firewall" => "firewall",
                "caps" => "caps",
                _ => "files",
            };
            continue;
        }
        if line.is_empty() {
            continue;
        }
        match section {
            "containers" => {
                let f: Vec<&str> = line.split('\t').collect();
                if f.len() < 9 {
                    continue;
                }
                actual.containers.push(ActualContainer {
                    name: f[0].to_string(),
                    running: f[1] == "running",
                    service: f[2].to_string(),
                    hash: f[3].to_string(),
                    image_hash: f[4].to_string(),
                    env_hash: f[5].to_string(),
                    run_hash: f[6].to_string(),
                    image: f[7].to_string(),
                    previous_image: f[8].to_string(),
                });
            }
            "volumes" => actual.volumes.push(line.to_string()),
            "networks" => actual.networks.push(line.to_string()),
            "firewall" => actual.firewall_missing |= line == "missing",
            "caps" => {
                actual.can_apply.insert(line.trim().to_string());
            }
            "files" => {
                if let Some((p, h)) = line.split_once('\t') {
                    actual.files.insert(p.to_string(), h.trim().to_string());
                }
            }
            _ => {}
        }
    }
    Ok(actual)
}
