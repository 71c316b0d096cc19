//! What a host should run, computed from the descriptors: containers, volumes, the network and
//! files, each with a content hash of everything that defines it (and per-input hashes, so a
//! plan can say which input changed).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::images::base::hex;
use crate::model::{Host, Model, Service, ServiceKind, Status};

pub const HOST_LABEL: &str = "xtask.host";
pub const SERVICE_LABEL: &str = "xtask.service";
pub const HASH_LABEL: &str = "xtask.config";
pub const IMAGE_HASH_LABEL: &str = "xtask.config.image";
pub const ENV_HASH_LABEL: &str = "xtask.config.env";
pub const RUN_HASH_LABEL: &str = "xtask.config.run";
pub const PREVIOUS_LABEL: &str = "xtask.previous-image";

/// Host-qualified so several hosts' containers can share one engine (the local one in tests,
/// or a machine that is both `local` and a test host).
pub fn container_name(host: &str, service: &str) -> String {
    format!("xtask-{host}-{service}")
}

pub fn network_name(host: &str) -> String {
    format!("xtask-{host}")
}

pub fn volume_name(host: &str, service: &str, volume: &str) -> String {
    format!("xtask-{host}-{service}-{volume}")
}

#[derive(Debug, Clone)]
pub struct DesiredContainer {
    pub service: String,
    pub name: String,
    pub image: String,
    /// `(container port, host port)`.
    pub ports: Vec<(u16, Option<u16>)>,
    /// `(volume name, mount point)`.
    pub volumes: Vec<(String, String)>,
    pub command: Vec<String>,
    pub workdir: Option<String>,
    pub has_volumes: bool,
    pub hash: String,
    pub image_hash: String,
    pub env_hash: String,
    pub run_hash: String,
}

#[derive(Debug, Clone)]
pub struct DesiredFile {
    /// Absolute path on the host.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    /// What it is, for the plan ("env file of notes-api", "nginx site").
    pub what: String,
}

#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub network: String,
    pub volumes: Vec<String>,
    /// In start order (dependencies first).
    pub containers: Vec<DesiredContainer>,
    pub files: Vec<DesiredFile>,
    /// Rendered file path -> (the program that applies it, the path of its applied copy), for
    /// the integrations `up` copies into /etc where the host has the program.
    pub applied: BTreeMap<String, (String, String)>,
}

pub fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// The host's container services in start order (dependencies first).
pub fn container_services<'m>(model: &'m Model, host: &Host) -> Vec<&'m Service> {
    let mut order = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    fn visit<'m>(
        model: &'m Model,
        host: &Host,
        s: &'m Service,
        seen: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<&'m Service>,
    ) {
        if !seen.insert(s.name.clone()) {
            return;
        }
        for d in s.spec.run.iter().flat_map(|r| &r.depends_on) {
            if let Some(dep) = model.service(d) {
                if host.spec.services.contains(d) {
                    visit(model, host, dep, seen, order);
                }
            }
        }
        order.push(s);
    }
    for name in &host.spec.services {
        let Some(s) = model.service(name) else {
            continue;
        };
        if s.spec.status == Status::Active && s.spec.kind == ServiceKind::Container {
            visit(model, host, s, &mut seen, &mut order);
        }
    }
    order
}

/// The desired container of one service, given its image id and rendered env file.
pub fn container(host: &str, s: &Service, image: &str, env_file: String) -> DesiredContainer {
    let run = s.spec.run.clone().unwrap_or_default();
    let ports: Vec<(u16, Option<u16>)> = run.ports.iter().map(|p| (p.container, p.host)).collect();
    let volumes: Vec<(String, String)> = run
        .volumes
        .iter()
        .map(|v| (volume_name(host, &s.name, &v.name), v.target.clone()))
        .collect();
    let run_text = serde_json::json!({
        "ports": ports,
        "volumes": volumes,
        "command": run.command,
        "workdir": run.workdir,
    })
    .to_string();
    let image_hash = sha(&[image.as_bytes()]);
    let env_hash = sha(&[env_file.as_bytes()]);
    let run_hash = sha(&[run_text.as_bytes()]);
    let hash = sha(&[
        image_hash.as_bytes(),
        env_hash.as_bytes(),
        run_hash.as_bytes(),
    ]);
    DesiredContainer {
        service: s.name.clone(),
        name: container_name(host, &s.name),
        image: image.to_string(),
        has_volumes: !volumes.is_empty(),
        ports,
        volumes,
        command: run.command,
        workdir: run.workdir,
        hash,
        image_hash,
        env_hash,
        run_hash,
    }
}

/// Where a host keeps its files: the descriptor's root, or for the local machine a folder
/// in the workspace's ignored cache.
pub fn root_dir(model: &Model, host: &Host) -> String {
    match &host.spec.root {
        Some(r) => r.clone(),
        None => model
            .root
            .join(".xtask/hosts")
            .join(&host.name)
            .to_string_lossy()
            .into_owned(),
    }
}

/// Per-service env file path on the host.
pub fn env_path(root: &str, service: &str) -> String {
    format!("{root}/{service}/.env")
}
