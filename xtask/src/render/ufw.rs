//! A host's `[[firewall]]` rules as ufw commands: each port allowed from its subnets, then
//! denied for everyone else. ufw matches rules in the order they were added, so every allow
//! comes before the deny of its port.
//!
//! Each rule carries the comment `xtask <host>`, so the tool can later find the rules it added
//! (ufw has no labels) and remove one whose port left the descriptor.

use std::collections::BTreeSet;

use anyhow::Result;

use super::sh;
use crate::model::{Host, Model, Protocol};

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

enum Rule<'h> {
    Allow {
        from: &'h str,
        port: u16,
        proto: Protocol,
    },
    Deny {
        port: u16,
        proto: Protocol,
    },
}

fn ordered(host: &Host) -> Vec<Rule<'_>> {
    let mut out: Vec<Rule> = host
        .spec
        .firewall
        .iter()
        .map(|f| Rule::Allow {
            from: &f.allow,
            port: f.port,
            proto: f.protocol,
        })
        .collect();
    // Distinct ports, in the order the descriptor first names them.
    let mut seen = BTreeSet::new();
    for f in &host.spec.firewall {
        if seen.insert((f.port, f.protocol)) {
            out.push(Rule::Deny {
                port: f.port,
                proto: f.protocol,
            });
        }
    }
    out
}

pub fn comment(host: &Host) -> String {
    format!("xtask {}", host.name)
}

/// The argv of each ufw command, in the order they must run.
pub fn rules(_model: &Model, host: &Host) -> Vec<Vec<String>> {
    let comment = comment(host);
    ordered(host)
        .into_iter()
        .map(|r| {
            let mut argv: Vec<String> = match r {
                Rule::Allow {
                    from,
                    port,
                    proto: p,
                } => vec![
                    "ufw".into(),
                    "allow".into(),
                    "from".into(),
                    from.to_string(),
                    "to".into(),
                    "any".into(),
                    "port".into(),
                    port.to_string(),
                    "proto".into(),
                    proto(p).into(),
                ],
                Rule::Deny { port, proto: p } => {
                    vec!["ufw".into(), "deny".into(), format!("{port}/{}", proto(p))]
                }
            };
            argv.extend(["comment".to_string(), comment.clone()]);
            argv
        })
        .collect()
}

/// The same commands as a script for a human to read or run.
pub fn script(_model: &Model, host: &Host) -> Result<String> {
    let mut out = format!(
        "#!/bin/sh\n\
         # Firewall rules of host `{0}`, rendered by `cargo xtask` from hosts/{0}.toml.\n\
         # Each port is allowed from its subnets, then denied for everyone else (ufw matches\n\
         # rules in order). This does not enable ufw: allow ssh before you do.\n\
         set -e\n",
        host.name
    );
    let comment = sh(&comment(host))?;
    for r in ordered(host) {
        let line = match r {
            Rule::Allow {
                from,
                port,
                proto: p,
            } => format!(
                "ufw allow from {} to any port {port} proto {} comment {comment}\n",
                sh(from)?,
                proto(p)
            ),
            Rule::Deny { port, proto: p } => {
                format!("ufw deny {port}/{} comment {comment}\n", proto(p))
            }
        };
        out.push_str(&line);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn argv(words: &str) -> Vec<String> {
        let mut v: Vec<String> = words.split(' ').map(String::from).collect();
        v.push("comment".into());
        v.push("xtask homelab".into());
        v
    }

    #[test]
    fn repo_homelab_allows_the_vlan_then_denies() {
        let m = repo();
        let h = host(&m, "homelab");
        assert_eq!(
            rules(&m, h),
            vec![
                argv("ufw allow from 192.168.10.0/24 to any port 5000 proto tcp"),
                argv("ufw allow from 192.168.10.0/24 to any port 3000 proto tcp"),
                argv("ufw allow from 192.168.10.0/24 to any port 80 proto tcp"),
                argv("ufw deny 5000/tcp"),
                argv("ufw deny 3000/tcp"),
                argv("ufw deny 80/tcp"),
            ]
        );
    }

    #[test]
    fn one_deny_per_port_after_all_allows() {
        let h = r#"
name = "box"
description = "d"
reach = "local"
[[firewall]]
port = 53
protocol = "udp"
allow = "10.0.0.0/8"
[[firewall]]
port = 53
protocol = "udp"
allow = "192.168.0.0/16"
[[firewall]]
port = 22
allow = "10.0.0.0/8"
"#;
        let m = inline(&[], &[h]);
        let r = rules(&m, host(&m, "box"));
        let verbs: Vec<String> = r.iter().map(|a| format!("{} {}", a[1], a[2])).collect();
        assert_eq!(
            verbs,
            [
                "allow from",
                "allow from",
                "allow from",
                "deny 53/udp",
                "deny 22/tcp"
            ]
        );
        assert_eq!(r[1][3], "192.168.0.0/16");
        assert_eq!(r[0][9], "udp");
    }

    #[test]
    fn script_quotes_descriptor_values() {
        let m = fixture();
        let s = script(&m, host(&m, "testbox")).unwrap();
        assert!(
            s.contains(
                "ufw allow from '10.0.0.0/8' to any port 18080 proto tcp comment 'xtask testbox'\n\
             ufw deny 18080/tcp comment 'xtask testbox'\n"
            ),
            "{s}"
        );
        // A hostile subnet (the validator rejects it) stays one word.
        let h = "name = \"box\"\ndescription = \"d\"\nreach = \"local\"\n\
                 [[firewall]]\nport = 1\nallow = \"x; ufw disable\"\n";
        let m = inline(&[], &[h]);
        let s = script(&m, host(&m, "box")).unwrap();
        assert!(s.contains("from 'x; ufw disable' to"), "{s}");
    }

    #[test]
    fn no_rules_no_commands() {
        let m = fixture();
        assert!(rules(&m, host(&m, "local")).is_empty());
    }
}
