//! The difference between what a host should run and what it runs: create / replace / remove
//! / unchanged per object, with the reason for each replace.

use std::fmt;

use sha2::Digest;

use super::desired::Desired;
use super::observe::Actual;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// With the reason: which input changed.
    Replace(String),
    Remove(String),
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Network,
    Volume,
    Container,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Container => "container",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Item {
    pub kind: Kind,
    /// Container, volume or network name, or file path.
    pub name: String,
    pub what: String,
    pub action: Action,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<Item>,
}

impl Plan {
    pub fn changes(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.action != Action::Unchanged)
            .count()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            let (mark, why) = match &i.action {
                Action::Create => ("create   ", String::new()),
                Action::Replace(r) => ("replace  ", format!(" ({r})")),
                Action::Remove(r) => ("remove   ", format!(" ({r})")),
                Action::Unchanged => ("unchanged", String::new()),
            };
            let what = if i.kind == Kind::File {
                format!(" [{}]", i.what)
            } else {
                String::new()
            };
            writeln!(f, "  {mark} {:9} {}{what}{why}", i.kind.as_str(), i.name)?;
        }
        let n = self.changes();
        write!(f, "{n} change{}", if n == 1 { "" } else { "s" })
    }
}

pub fn diff(desired: &Desired, actual: &Actual) -> Plan {
    let mut items = Vec::new();
    for file in &desired.files {
        let hash = file_hash(&file.content);
        let action = match actual.files.get(&file.path) {
            None => Action::Create,
            // Applying the rules again is what loads the chain.
            Some(h)
                if *h == hash && actual.firewall_missing && file.what == super::integrate::UFW =>
            {
                Action::Replace("the rules for Docker's published ports are not loaded".into())
            }
            Some(h) if *h == hash => match desired.applied.get(&file.path) {
                // Rendered as wanted, but its copy in /etc is gone or was edited there.
                Some((program, copy))
                    if actual.can_apply.contains(program)
                        && actual.files.get(copy) != Some(&hash) =>
                {
                    Action::Replace(format!("its applied copy {copy} is missing or differs"))
                }
                _ => Action::Unchanged,
            },
            Some(_) => Action::Replace("content changed".into()),
        };
        items.push(Item {
            kind: Kind::File,
            name: file.path.clone(),
            what: file.what.clone(),
            action,
        });
    }
    // Hosts without containers (github-actions) have no network.
    if !desired.network.is_empty() {
        items.push(Item {
            kind: Kind::Network,
            name: desired.network.clone(),
            what: "network".into(),
            action: if actual.networks.contains(&desired.network) {
                Action::Unchanged
            } else {
                Action::Create
            },
        });
    }
    for v in &desired.volumes {
        items.push(Item {
            kind: Kind::Volume,
            name: v.clone(),
            what: "volume".into(),
            action: if actual.volumes.contains(v) {
                Action::Unchanged
            } else {
                Action::Create
            },
        });
    }
    for c in &desired.containers {
        let current = actual.containers.iter().find(|a| a.name == c.name);
        let action = match current {
            None => Action::Create,
            Some(a) => {
                let mut why = Vec::new();
                if a.image_hash != c.image_hash {
                    why.push("image changed");
                }
                if a.env_hash != c.env_hash {
                    why.push("env changed");
                }
                if a.run_hash != c.run_hash {
                    why.push("ports, volumes or command changed");
                }
                if why.is_empty() && a.hash != c.hash {
                    why.push("configuration changed");
                }
                if why.is_empty() && !a.running {
                    why.push("not running");
                }
                if why.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Replace(why.join(", "))
                }
            }
        };
        items.push(Item {
            kind: Kind::Container,
            name: c.name.clone(),
            what: c.service.clone(),
            action,
        });
    }
    // Containers of this host that no descriptor wants any more, and leftovers of a run that
    // was killed half way through a replace.
    for a in &actual.containers {
        let wanted = desired.containers.iter().any(|c| c.name == a.name);
        if wanted {
            continue;
        }
        let leftover = a.name.ends_with("-next") || a.name.ends_with("-prev");
        let reason = if leftover {
            "left by an interrupted run".to_string()
        } else {
            format!("`{}` is no longer on this host", a.service)
        };
        items.push(Item {
            kind: Kind::Container,
            name: a.name.clone(),
            what: a.service.clone(),
            action: Action::Remove(reason),
        });
    }
    Plan { items }
}

/// sha256 of a file's bytes, as `sha256sum` prints it on the host.
pub fn file_hash(content: &[u8]) -> String {
    crate::images::base::hex(&sha2::Sha256::digest(content))
}

#[cfg(test)]
mod tests {
    use super::super::desired::DesiredFile;
    use super::*;

    fn file(path: &str, what: &str) -> DesiredFile {
        DesiredFile {
            path: path.into(),
            content: b"same".to_vec(),
            mode: 0o644,
            what: what.into(),
        }
    }

    #[test]
    fn an_unloaded_firewall_chain_replaces_only_the_firewall_file() {
        let desired = Desired {
            files: vec![
                file("/r/ufw.sh", super::super::integrate::UFW),
                file("/r/cron", super::super::integrate::CRON),
            ],
            ..Desired::default()
        };
        let mut actual = Actual::default();
        for f in &desired.files {
            actual.files.insert(f.path.clone(), file_hash(&f.content));
        }
        let actions = |a: &Actual| -> Vec<Action> {
            diff(&desired, a)
                .items
                .into_iter()
                .map(|i| i.action)
                .collect()
        };
        assert_eq!(actions(&actual), [Action::Unchanged, Action::Unchanged]);
        actual.firewall_missing = true;
        let got = actions(&actual);
        assert!(
            matches!(&got[0], Action::Replace(r) if r.contains("not loaded")),
            "{got:?}"
        );
        assert_eq!(got[1], Action::Unchanged);
    }

    #[test]
    fn an_applied_copy_that_is_gone_or_edited_is_applied_again_where_it_can_be() {
        let mut desired = Desired {
            files: vec![file("/r/nginx.conf", super::super::integrate::NGINX)],
            ..Desired::default()
        };
        desired.applied.insert(
            "/r/nginx.conf".into(),
            ("nginx".into(), "/etc/nginx/conf.d/x.conf".into()),
        );
        let hash = file_hash(b"same");
        let mut actual = Actual::default();
        actual.files.insert("/r/nginx.conf".into(), hash.clone());
        let action = |a: &Actual| diff(&desired, a).items.remove(0).action;
        // No nginx (or not root): the rendered file is all there is, and it is as wanted.
        assert_eq!(action(&actual), Action::Unchanged);
        actual.can_apply.insert("nginx".into());
        assert!(
            matches!(action(&actual), Action::Replace(r) if r.contains("/etc/nginx/conf.d/x.conf")),
            "a missing copy"
        );
        actual
            .files
            .insert("/etc/nginx/conf.d/x.conf".into(), "edited".into());
        assert!(
            matches!(action(&actual), Action::Replace(_)),
            "an edited copy"
        );
        actual.files.insert("/etc/nginx/conf.d/x.conf".into(), hash);
        assert_eq!(action(&actual), Action::Unchanged);
    }
}
