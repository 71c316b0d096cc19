//! Files rendered from the descriptors for a host: nginx site, cron entries and health scripts,
//! firewall rules, GitHub Actions workflows, desktop MCP client entries. Pure functions:
//! descriptors in, text out, so `plan` can hash and diff them and tests can read them.
//!
//! Every descriptor value that reaches a shell line goes through `sh`, the one audited quoting
//! function (`target::quote`). Rendering fails rather than emit something a value could break
//! out of (a line break in a cron line, a NUL anywhere).

// plan/up, which call these, are being written; until they do, the binary does not.
#![allow(dead_code)]

pub mod cron;
pub mod mcp_client;
pub mod nginx;
pub mod ufw;
pub mod workflows;

use anyhow::{Context, Result};

use crate::model::{Model, Service};

// Containers and host folders are named by `deploy`, which creates them; cron lines and health
// scripts must reach the very same ones.
use crate::deploy::desired::{container_name, root_dir as host_root};

/// One POSIX shell word that the shell reads back as exactly `word`.
fn sh(word: &str) -> Result<String> {
    crate::target::quote::quote(word)
}

/// `argv` as a shell command line, each word quoted.
fn sh_argv(argv: &[impl AsRef<str>]) -> Result<String> {
    crate::target::quote::command_line(argv)
}

fn service<'m>(model: &'m Model, name: &str) -> Result<&'m Service> {
    model
        .service(name)
        .with_context(|| format!("unknown service `{name}`"))
}

/// The host port a service publishes for one of its container ports.
fn published_port(s: &Service, container: u16) -> Option<u16> {
    s.spec
        .run
        .iter()
        .flat_map(|r| &r.ports)
        .find(|p| p.container == container)
        .and_then(|p| p.host)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Models for the renderers' tests: the fixture workspace, the repository's own
    //! descriptors, and small inline ones.

    use std::path::{Path, PathBuf};

    use crate::model::{self, Host, HostFile, Model, Service, ServiceFile};

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    fn load(root: &Path) -> Model {
        model::load(root).unwrap_or_else(|e| panic!("{} does not load:\n{e}", root.display()))
    }

    /// tests/fixtures/eco, validated.
    pub fn fixture() -> Model {
        load(&repo_root().join("tests/fixtures/eco"))
    }

    /// The real ecosystem's descriptors, validated.
    pub fn repo() -> Model {
        load(&repo_root())
    }

    /// A model from inline descriptors, NOT validated: each test states the few keys it needs.
    pub fn inline(services: &[&str], hosts: &[&str]) -> Model {
        let services = services
            .iter()
            .map(|t| {
                let spec: ServiceFile = toml::from_str(t).unwrap();
                Service {
                    name: spec.name.clone(),
                    dir: PathBuf::from("/nonexistent/services").join(&spec.name),
                    doc: 0,
                    spec,
                }
            })
            .collect();
        let hosts = hosts
            .iter()
            .map(|t| {
                let spec: HostFile = toml::from_str(t).unwrap();
                Host {
                    name: spec.name.clone(),
                    doc: 0,
                    spec,
                }
            })
            .collect();
        Model {
            root: PathBuf::from("/work/space"),
            docs: Vec::new(),
            services,
            hosts,
            libs: Vec::new(),
            unparsed: Vec::new(),
        }
    }

    pub fn host<'m>(model: &'m Model, name: &str) -> &'m Host {
        model.hosts.iter().find(|h| h.name == name).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn published_port_maps_container_to_host() {
        let m = fixture();
        let api = m.service("notes-api").unwrap();
        assert_eq!(published_port(api, 8080), Some(18080));
        let db = m.service("notes-db").unwrap();
        assert_eq!(published_port(db, 5432), None);
    }
}
