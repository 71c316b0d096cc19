//! Base images made locally, for machines without a container registry: debootstrap a minimal
//! Debian from the mirror the machine's own apt configuration names, add the host's extra CA
//! certificates (so pip inside builds passes a TLS-intercepting proxy), `docker import` it.
//!
//! Recipes are known by name (`xtask-base/python:bookworm`, `xtask-base/postgres:bookworm`).
//! Each image carries a label with the hash of its recipe and of the CA certificates, so a
//! changed recipe or certificate makes a new base instead of silently reusing a stale one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::docker;
use crate::proc;

pub const PREFIX: &str = "xtask-base/";
const SUITE: &str = "bookworm";
const RECIPE_LABEL: &str = "xtask.base.recipe";

struct Recipe {
    name: &'static str,
    packages: &'static [&'static str],
}

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "python",
        packages: &["python3", "python3-venv", "python3-pip", "ca-certificates"],
    },
    Recipe {
        name: "postgres",
        packages: &[
            "python3",
            "python3-venv",
            "python3-pip",
            "ca-certificates",
            "postgresql",
        ],
    },
];

/// What base images this tool can make, for error messages.
pub fn known() -> Vec<String> {
    RECIPES
        .iter()
        .map(|r| format!("{PREFIX}{}:{SUITE}", r.name))
        .collect()
}

fn recipe(reference: &str) -> Option<&'static Recipe> {
    let rest = reference.strip_prefix(PREFIX)?;
    let (name, suite) = rest.split_once(':').unwrap_or((rest, "latest"));
    if suite != SUITE {
        return None;
    }
    RECIPES.iter().find(|r| r.name == name)
}

/// The host's extra CA certificates, sorted by name.
fn extra_certs() -> Vec<PathBuf> {
    let mut certs: Vec<PathBuf> = fs::read_dir("/usr/local/share/ca-certificates")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect()
        })
        .unwrap_or_default();
    certs.sort();
    certs
}

fn recipe_hash(recipe: &Recipe) -> String {
    let mut h = Sha256::new();
    h.update(b"xtask-base v1\0");
    h.update(SUITE.as_bytes());
    for p in recipe.packages {
        h.update(b"\0");
        h.update(p.as_bytes());
    }
    // Which update suites are applied (a machine that gains or loses one makes its bases anew).
    for (uri, suite) in update_sources() {
        h.update(format!("\0updates\0{uri}\0{suite}").as_bytes());
    }
    for cert in extra_certs() {
        h.update(b"\0cert\0");
        h.update(fs::read(&cert).unwrap_or_default());
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes sure `reference` is present and returns its image id. A missing image is pulled, or
/// made when it is one of ours; `rebuild` makes ours anew even when present.
pub fn ensure(reference: &str, rebuild: bool, log: &dyn Fn(&str)) -> Result<String> {
    let Some(recipe) = recipe(reference) else {
        if let Some(id) = docker::image_id(reference)? {
            return Ok(id);
        }
        log(&format!(
            "base image {reference} is missing; trying docker pull"
        ));
        let pulled = proc::output(
            &mut proc::cmd("docker", ["pull", "--quiet", reference]),
            None,
        )?;
        if pulled.status.success() {
            if let Some(id) = docker::image_id(reference)? {
                return Ok(id);
            }
        }
        bail!(
            "base image `{reference}` is not present and cannot be pulled ({}); use one this tool makes itself: {}",
            proc::tail(&String::from_utf8_lossy(&pulled.stderr), 1),
            known().join(", ")
        );
    };
    let want = recipe_hash(recipe);
    // Serialize base creation across processes (parallel tests, two terminals): one makes it,
    // the others wait and then find it.
    let lock_path = std::env::temp_dir().join(format!("xtask-base-{}.lock", recipe.name));
    let lock =
        File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock().context("lock the base image")?;
    if !rebuild {
        if let Some(id) = docker::image_id(reference)? {
            if docker::image_label(&id, RECIPE_LABEL)?.as_deref() == Some(want.as_str()) {
                return Ok(id);
            }
            log(&format!(
                "{reference}: recipe or CA certificates changed, making it anew"
            ));
        }
    }
    make(recipe, reference, &want, log)?;
    docker::image_id(reference)?.with_context(|| format!("{reference} missing right after import"))
}

/// The Debian mirror apt on this machine uses for the suite; `XTASK_DEBIAN_MIRROR` overrides.
pub fn debian_mirror() -> Result<String> {
    if let Ok(m) = std::env::var("XTASK_DEBIAN_MIRROR") {
        if !m.is_empty() {
            return Ok(m);
        }
    }
    source_for(SUITE).with_context(|| format!("no Debian {SUITE} source in this machine's apt configuration; set XTASK_DEBIAN_MIRROR to a Debian mirror URL"))
}

/// The suites that carry fixes after the release, applied to every base when this machine's
/// apt configuration names them.
const UPDATE_SUITES: [&str; 2] = ["bookworm-updates", "bookworm-security"];

/// `(URI, suite)` of each update suite this machine's apt configuration names.
fn update_sources() -> Vec<(String, &'static str)> {
    UPDATE_SUITES
        .iter()
        .filter_map(|suite| source_for(suite).map(|uri| (uri, *suite)))
        .collect()
}

/// The URI apt on this machine uses for `suite` (component main), if any: from its source
/// files (both formats), else from `apt-get indextargets`, which knows every way apt can be
/// configured but takes a noticeable part of a second (too much for a no-op build).
fn source_for(suite: &str) -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            // What apt itself reads there; `.save`, `.disabled` and the like it ignores.
            let deb822 = match p.extension().and_then(|e| e.to_str()) {
                Some("sources") => true,
                Some("list") => false,
                _ => continue,
            };
            texts.push((deb822, fs::read_to_string(&p).unwrap_or_default()));
        }
    }
    texts.push((
        false,
        fs::read_to_string("/etc/apt/sources.list").unwrap_or_default(),
    ));
    let from_files = texts.into_iter().find_map(|(deb822, text)| {
        if deb822 {
            mirror_deb822(&text, suite)
        } else {
            mirror_one_line(&text, suite)
        }
    });
    from_files.or_else(|| {
        let out = proc::output(
            &mut proc::cmd(
                "apt-get",
                [
                    "indextargets",
                    "--format",
                    "$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)",
                ],
            ),
            None,
        )
        .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() == 4 && f[1] == suite && f[2] == "main" && f[3] == "Packages")
                    .then(|| f[0].trim_end_matches('/').to_string())
            })
    })
}

fn mirror_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim_start();
        let rest = line.strip_prefix("deb")?;
        (rest.starts_with(char::is_whitespace)).then_some(())?;
        // Options are one bracketed block that may hold spaces: `[arch=amd64 signed-by=...]`.
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(opts) => opts.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == suite).then(|| uri.trim_end_matches('/').to_string())
    })
}

fn mirror_deb822(text: &str, suite: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut types = "";
        let mut uris = "";
        let mut suites = "";
        let mut enabled = true;
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = v.trim(),
                "uris" => uris = v.trim(),
                "suites" => suites = v.trim(),
                "enabled" => enabled = !v.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled
            && types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == suite)
        {
            if let Some(uri) = uris.split_whitespace().next() {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// Removes the rootfs even when making the image fails half way.
struct Rootfs(PathBuf);

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn make(recipe: &Recipe, reference: &str, hash: &str, log: &dyn Fn(&str)) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("making base image {reference} needs root (debootstrap and chroot); run `sudo cargo xtask build --base` once");
    }
    ensure_debootstrap(log)?;
    let mirror = debian_mirror()?;
    let work = std::env::var_os("XTASK_BASE_WORKDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = Rootfs(work.join(format!("xtask-base-{}-{}", recipe.name, std::process::id())));
    let _ = fs::remove_dir_all(&dir.0);
    fs::create_dir_all(&dir.0)?;
    let root = dir.0.as_path();

    log(&format!(
        "{reference}: debootstrap {SUITE} ({})",
        recipe.packages.join(", ")
    ));
    let mut cmd = proc::cmd("debootstrap", ["--variant=minbase"]);
    cmd.arg(format!("--include={}", recipe.packages.join(",")));
    if Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").is_file() {
        cmd.arg("--keyring=/usr/share/keyrings/debian-archive-keyring.gpg");
    }
    cmd.arg(SUITE).arg(root).arg(&mirror);
    proc::run(&mut cmd, None).with_context(|| format!("debootstrap of {reference} failed"))?;

    // No daemons started by package scripts (here while updating, and in derived builds), as
    // in the official Debian images.
    write_mode(
        &root.join("usr/sbin/policy-rc.d"),
        "#!/bin/sh\nexit 101\n",
        0o755,
    )?;

    // The proxy's CA: without it pip inside builds fails TLS verification.
    let ca_dir = root.join("usr/local/share/ca-certificates");
    fs::create_dir_all(&ca_dir)?;
    for cert in extra_certs() {
        fs::copy(&cert, ca_dir.join(cert.file_name().unwrap()))?;
    }
    proc::run(
        &mut proc::cmd(
            "chroot",
            [root.as_os_str(), "update-ca-certificates".as_ref()],
        ),
        None,
    )?;

    // Security and stable updates: debootstrap installs the release as it was; the fixes since
    // come from the suites this machine's apt names. They stay listed in the image, so a
    // Dockerfile's `apt-get install` gets fixed packages too.
    let updates = update_sources();
    if updates.is_empty() {
        log(&format!(
            "{reference}: no {} source in this machine's apt configuration: the base has the release's packages, without later fixes",
            UPDATE_SUITES.join(" or ")
        ));
    } else {
        let list: String = updates
            .iter()
            .map(|(uri, suite)| format!("deb {uri} {suite} main\n"))
            .collect();
        fs::write(root.join("etc/apt/sources.list.d/xtask-updates.list"), list)?;
        // Name resolution for apt inside the chroot (emptied again below: Docker provides it).
        fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))
            .context("copy /etc/resolv.conf into the rootfs")?;
        log(&format!(
            "{reference}: applying updates ({})",
            updates
                .iter()
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        proc::run(
            &mut proc::cmd(
                "chroot",
                [root.as_os_str(), "apt-get".as_ref(), "update".as_ref()],
            ),
            None,
        )
        .with_context(|| format!("apt-get update in the {reference} rootfs failed"))?;
        let mut upgrade = proc::cmd(
            "chroot",
            [
                root.as_os_str(),
                "apt-get".as_ref(),
                "-y".as_ref(),
                "-o".as_ref(),
                "Dpkg::Options::=--force-confold".as_ref(),
                "upgrade".as_ref(),
            ],
        );
        upgrade.env("DEBIAN_FRONTEND", "noninteractive");
        proc::run(&mut upgrade, None)
            .with_context(|| format!("apt-get upgrade in the {reference} rootfs failed"))?;
    }

    if recipe.name == "postgres" {
        // The package's default cluster is of no use: containers initdb their own data
        // directory on a volume. The socket directory is normally made by the init system.
        let _ = fs::remove_dir_all(root.join("etc/postgresql/15/main"));
        let _ = fs::remove_dir_all(root.join("var/lib/postgresql/15/main"));
        proc::run(
            &mut proc::cmd(
                "chroot",
                [
                    root.as_os_str(),
                    "install".as_ref(),
                    "-d".as_ref(),
                    "-m".as_ref(),
                    "2775".as_ref(),
                    "-o".as_ref(),
                    "postgres".as_ref(),
                    "-g".as_ref(),
                    "postgres".as_ref(),
                    "/var/run/postgresql".as_ref(),
                ],
            ),
            None,
        )?;
    }

    // What the official Debian images do, so derived Dockerfiles behave: no package caches or
    // docs kept.
    fs::write(
        root.join("etc/apt/apt.conf.d/docker-no-recommends"),
        "APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n",
    )?;
    proc::run(
        &mut proc::cmd(
            "chroot",
            [root.as_os_str(), "apt-get".as_ref(), "clean".as_ref()],
        ),
        None,
    )?;
    for sub in [
        "var/lib/apt/lists",
        "usr/share/man",
        "usr/share/info",
        "var/cache/apt",
        "tmp",
        "var/tmp",
        "root/.cache",
    ] {
        let p = root.join(sub);
        if p.is_dir() {
            for e in fs::read_dir(&p)?.flatten() {
                let path = e.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
    // Docker provides these per container; do not ship the host's.
    fs::write(root.join("etc/resolv.conf"), "")?;
    fs::write(root.join("etc/hostname"), "")?;

    log(&format!("{reference}: docker import"));
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start tar")?;
    let mut import = proc::cmd("docker", ["import"]);
    for change in [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1",
        "ENV PIP_NO_CACHE_DIR=1",
        "ENV PYTHONUNBUFFERED=1",
        "CMD [\"python3\"]",
    ] {
        import.args(["--change", change]);
    }
    import.args([
        "--change",
        &format!("LABEL {RECIPE_LABEL}={hash} xtask.base={}", recipe.name),
    ]);
    import.args(["-", reference]);
    import.stdin(tar.stdout.take().expect("piped"));
    let out = import.output().context("start docker import")?;
    let tar_out = tar.wait_with_output()?;
    if !tar_out.status.success() {
        bail!(
            "tar of the {reference} rootfs failed: {}",
            proc::tail(&String::from_utf8_lossy(&tar_out.stderr), 5)
        );
    }
    if !out.status.success() {
        bail!(
            "docker import of {reference} failed: {}",
            proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
        );
    }
    Ok(())
}

/// A fresh Debian machine has no debootstrap; as root with apt at hand, install it rather than
/// stop a newcomer's first command (and say so).
fn ensure_debootstrap(log: &dyn Fn(&str)) -> Result<()> {
    let found = proc::output(&mut proc::cmd("debootstrap", ["--version"]), None).is_ok();
    if found {
        return Ok(());
    }
    let apt = proc::output(&mut proc::cmd("apt-get", ["--version"]), None).is_ok();
    if !apt {
        bail!("debootstrap is needed to make base images and is not installed; install it with your package manager");
    }
    log("debootstrap is missing: installing it with apt-get (needed to make base images)");
    let mut install = proc::cmd("apt-get", ["install", "-y", "-q", "debootstrap"]);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    if proc::run(&mut install, None).is_err() {
        // The package lists of a fresh machine may be empty or stale.
        proc::run(&mut proc::cmd("apt-get", ["update", "-q"]), None)?;
        proc::run(&mut install, None).context("apt-get install debootstrap")?;
    }
    Ok(())
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.test/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.test/security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_deb822(deb822, SUITE).as_deref(),
            Some("http://mirror.test/debian")
        );
        assert_eq!(
            mirror_deb822(deb822, "bookworm-security").as_deref(),
            Some("http://mirror.test/security")
        );
        let disabled = "Enabled: no\nTypes: deb\nURIs: http://a.test/\nSuites: bookworm\n";
        assert_eq!(mirror_deb822(disabled, SUITE), None);
        let one = "# comment\ndeb-src http://x.test/ bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://y.test/debian bookworm main\ndeb http://s.test/debian-security bookworm-security main\n";
        assert_eq!(
            mirror_one_line(one, SUITE).as_deref(),
            Some("http://y.test/debian")
        );
        assert_eq!(
            mirror_one_line(one, "bookworm-security").as_deref(),
            Some("http://s.test/debian-security")
        );
        assert_eq!(mirror_one_line(one, "bookworm-updates"), None);
    }

    #[test]
    fn only_known_recipes_are_made() {
        assert!(recipe("xtask-base/python:bookworm").is_some());
        assert!(recipe("xtask-base/postgres:bookworm").is_some());
        assert!(recipe("xtask-base/python:trixie").is_none());
        assert!(recipe("python:3.11-slim").is_none());
    }
}
