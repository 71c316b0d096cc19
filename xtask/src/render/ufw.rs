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

/// The iptables chain that holds a host's rules for ports Docker publishes (a chain name has
/// at most 28 characters).
pub fn docker_chain(host: &Host) -> String {
    let name = format!("XTASK-{}", host.name);
    if name.len() <= 28 {
        return name;
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(host.name.as_bytes());
    format!("XTASK-{}", crate::images::base::hex(&h[..8]))
}

/// Docker publishes a container's ports with its own iptables rules, ahead of ufw's, so ufw's
/// allow/deny never sees that traffic. The same rules for those ports, as `iptables-restore
/// --noflush` input for the host's own chain, which `DOCKER-USER` (the chain Docker leaves to
/// the administrator) jumps to: answers and container-to-container traffic pass, each port
/// from its subnets passes, the port from anywhere else is dropped. `--ctorigdstport` matches
/// the published port before Docker rewrites it to the container's. IPv4 only, as Docker's
/// default.
pub fn docker_rules(host: &Host) -> String {
    let chain = docker_chain(host);
    let mut out = format!(
        "*filter\n\
         :{chain} - [0:0]\n\
         -A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
         -A {chain} -i docker0 -j RETURN\n\
         -A {chain} -i br-+ -j RETURN\n"
    );
    let matches = |port: u16, p: Protocol| {
        format!(
            "-p {0} -m conntrack --ctorigdstport {port} --ctdir ORIGINAL",
            proto(p)
        )
    };
    for r in ordered(host) {
        match r {
            Rule::Allow {
                from,
                port,
                proto: p,
            } => {
                if from.contains(':') {
                    continue; // an IPv6 subnet: not in iptables' (IPv4) tables
                }
                out.push_str(&format!(
                    "-A {chain} {} -s {from} -j RETURN\n",
                    matches(port, p)
                ));
            }
            Rule::Deny { port, proto: p } => {
                out.push_str(&format!("-A {chain} {} -j DROP\n", matches(port, p)));
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// Loads [`docker_rules`] (stdin) into chain `$1` and makes `DOCKER-USER` jump to it once.
/// Prints `no-docker-user` and changes nothing where Docker's chain does not exist.
pub const DOCKER_APPLY: &str = r#"iptables -w -n -L DOCKER-USER >/dev/null 2>&1 || { echo no-docker-user; exit 0; }
iptables -w -n -L "$1" >/dev/null 2>&1 || iptables -w -N "$1" || exit 1
iptables-restore -w --noflush || exit 1
iptables -w -C DOCKER-USER -j "$1" 2>/dev/null || iptables -w -I DOCKER-USER -j "$1"
"#;

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
    let chain = sh(&docker_chain(host))?;
    out.push_str(&format!(
        "\n# Docker publishes container ports past ufw: the same rules for those ports in the\n\
         # chain {chain}, which Docker's DOCKER-USER chain jumps to (where Docker runs).\n\
         if iptables -w -n -L DOCKER-USER >/dev/null 2>&1; then\n\
         \x20 iptables -w -n -L {chain} >/dev/null 2>&1 || iptables -w -N {chain}\n\
         \x20 iptables-restore -w --noflush <<'XTASK_RULES'\n\
         {}XTASK_RULES\n\
         \x20 iptables -w -C DOCKER-USER -j {chain} 2>/dev/null || iptables -w -I DOCKER-USER -j {chain}\n\
         fi\n",
        docker_rules(host)
    ));
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

    #[test]
    fn repo_homelab_docker_rules_pass_the_vlan_and_drop_the_rest() {
        let m = repo();
        let h = host(&m, "homelab");
        let m5000 = "-p tcp -m conntrack --ctorigdstport 5000 --ctdir ORIGINAL";
        let m3000 = "-p tcp -m conntrack --ctorigdstport 3000 --ctdir ORIGINAL";
        let m80 = "-p tcp -m conntrack --ctorigdstport 80 --ctdir ORIGINAL";
        let c = "-A XTASK-homelab";
        assert_eq!(
            docker_rules(h),
            format!(
                "*filter\n:XTASK-homelab - [0:0]\n\
                 {c} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
                 {c} -i docker0 -j RETURN\n{c} -i br-+ -j RETURN\n\
                 {c} {m5000} -s 192.168.10.0/24 -j RETURN\n\
                 {c} {m3000} -s 192.168.10.0/24 -j RETURN\n\
                 {c} {m80} -s 192.168.10.0/24 -j RETURN\n\
                 {c} {m5000} -j DROP\n{c} {m3000} -j DROP\n{c} {m80} -j DROP\nCOMMIT\n"
            )
        );
    }

    /// Runs `script` with `args` in a network namespace of its own (root, `unshare`): real
    /// iptables that cannot touch this machine's firewall.
    fn in_netns(script: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new("unshare")
            .args(["--net", "sh", "-c", script, "sh"])
            .args(args)
            .output()
            .expect("run unshare")
    }

    #[test]
    fn docker_rules_load_into_real_iptables_once_however_often_applied() {
        let m = repo();
        let h = host(&m, "homelab");
        let dir = std::env::temp_dir().join(format!("xtask-ufw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("rules");
        std::fs::write(&rules, docker_rules(h)).unwrap();
        let apply = dir.join("apply.sh");
        std::fs::write(&apply, DOCKER_APPLY).unwrap();
        let script = r#"iptables -N DOCKER-USER && iptables -A DOCKER-USER -j RETURN || exit 9
for i in 1 2; do sh "$1" XTASK-homelab <"$2" || exit 8; done
iptables -S DOCKER-USER; iptables -S XTASK-homelab"#;
        let out = in_netns(script, &[apply.to_str().unwrap(), rules.to_str().unwrap()]);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{listed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One jump, first in DOCKER-USER; the chain holds each rule once, in order.
        let user: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with("-A DOCKER-USER"))
            .collect();
        assert_eq!(
            user,
            [
                "-A DOCKER-USER -j XTASK-homelab",
                "-A DOCKER-USER -j RETURN"
            ],
            "{listed}"
        );
        let ours: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with("-A XTASK-homelab"))
            .collect();
        assert_eq!(ours.len(), 9, "{listed}");
        assert!(
            ours[3].contains("-s 192.168.10.0/24")
                && ours[3].contains("--ctorigdstport 5000")
                && ours[3].ends_with("-j RETURN"),
            "{listed}"
        );
        assert!(
            ours[8].contains("--ctorigdstport 80") && ours[8].ends_with("-j DROP"),
            "{listed}"
        );

        // Without Docker's chain nothing is made, and it says so.
        let out = in_netns(
            r#"sh "$1" XTASK-homelab <"$2" || exit 8; iptables -S"#,
            &[apply.to_str().unwrap(), rules.to_str().unwrap()],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("no-docker-user"), "{text}");
        assert!(!text.contains("XTASK"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_rendered_script_runs_ufw_then_loads_the_docker_rules() {
        let m = repo();
        let h = host(&m, "homelab");
        let dir = std::env::temp_dir().join(format!("xtask-ufw-script-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        // A stand-in ufw that records its arguments; iptables is the real one.
        let ufw = dir.join("bin/ufw");
        std::fs::write(
            &ufw,
            "#!/bin/sh\necho \"ufw $*\" >>\"$(dirname \"$0\")/../calls\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ufw, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("ufw.sh");
        std::fs::write(&path, script(&m, h).unwrap()).unwrap();
        let run = r#"iptables -N DOCKER-USER || exit 9
PATH="$1:$PATH" sh "$2" || exit 8
iptables -S XTASK-homelab | grep -c -- '-j DROP'"#;
        let out = in_netns(
            run,
            &[dir.join("bin").to_str().unwrap(), path.to_str().unwrap()],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.trim(), "3", "three ports dropped from elsewhere");
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
        assert_eq!(calls.lines().count(), 6, "{calls}");
        assert!(
            calls.starts_with(
                "ufw allow from 192.168.10.0/24 to any port 5000 proto tcp comment xtask homelab\n"
            ),
            "{calls}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
