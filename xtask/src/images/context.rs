//! The build context, assembled by the tool as a tar stream: the Dockerfile vendored beside the
//! descriptor plus the files of the context directory. Docker sees exactly these bytes, so
//! their hash is exactly what the image is built from.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

/// Where the vendored Dockerfile sits inside the context.
pub const DOCKERFILE: &str = ".xtask.Dockerfile";

/// Never part of an image: VCS data, Python caches, local environments, dependency folders
/// that a Dockerfile re-creates.
const SKIP: &[&str] = &[
    ".git",
    "__pycache__",
    ".venv",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".env",
];

pub struct Context {
    pub tar: Vec<u8>,
    /// sha256 of the context, the build arguments and the base image id.
    pub hash: String,
}

/// `leave_out` names entries at the top of `dir` that are not part of the context (the
/// descriptor, when the context is the service's own directory).
/// `extra` files are added after the directory's (the wheelhouse).
pub fn assemble(
    dockerfile: &[u8],
    dir: &Path,
    leave_out: &[&str],
    extra: &[(String, Vec<u8>)],
    args: &BTreeMap<String, String>,
    base_id: &str,
) -> Result<Context> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    append(&mut builder, DOCKERFILE, dockerfile, 0o644)?;
    add_dir(&mut builder, dir, dir, leave_out)?;
    for (path, data) in extra {
        append(&mut builder, path, data, 0o644)?;
    }
    let tar = builder.into_inner()?;

    let mut h = Sha256::new();
    h.update(&tar);
    for (k, v) in args {
        h.update(format!("\0arg\0{k}\0{v}").as_bytes());
    }
    h.update(b"\0base\0");
    h.update(base_id.as_bytes());
    Ok(Context {
        tar,
        hash: super::base::hex(&h.finalize()),
    })
}

fn skipped(name: &str) -> bool {
    SKIP.contains(&name)
        || name.ends_with(".pyc")
        || name.ends_with(".egg-info")
        || name == DOCKERFILE
}

fn add_dir(
    builder: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    dir: &Path,
    leave_out: &[&str],
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if skipped(&name) || (dir == root && leave_out.contains(&name.as_ref())) {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            let mut header = header(tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut header, format!("{rel}/"), std::io::empty())?;
            add_dir(builder, root, &path, leave_out)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            let mut header = header(tar::EntryType::Symlink, 0o777, 0);
            builder.append_link(&mut header, &rel, &target)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            // Only the executable bit matters to a build; owner and times would make equal
            // contents hash differently across checkouts.
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let data = fs::read(&path)?;
            append(builder, &rel, &data, mode)?;
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    builder.append_data(&mut h, path, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_content_args_and_base_only() {
        let dir = std::env::temp_dir().join(format!("xtask-ctx-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src/__pycache__")).unwrap();
        fs::write(dir.join("Dockerfile"), "FROM x\n").unwrap();
        fs::write(dir.join("src/a.py"), "print(1)\n").unwrap();
        fs::write(dir.join("src/__pycache__/a.pyc"), "junk").unwrap();
        let df = fs::read(dir.join("Dockerfile")).unwrap();
        let args = BTreeMap::new();
        let a = assemble(&df, &dir.join("src"), &[], &[], &args, "base1").unwrap();
        // Caches do not count; the same content hashes the same.
        fs::write(dir.join("src/__pycache__/a.pyc"), "other junk").unwrap();
        assert_eq!(
            a.hash,
            assemble(&df, &dir.join("src"), &[], &[], &args, "base1")
                .unwrap()
                .hash
        );
        assert_ne!(
            a.hash,
            assemble(&df, &dir.join("src"), &[], &[], &args, "base2")
                .unwrap()
                .hash
        );
        let mut args2 = BTreeMap::new();
        args2.insert("X".to_string(), "1".to_string());
        assert_ne!(
            a.hash,
            assemble(&df, &dir.join("src"), &[], &[], &args2, "base1")
                .unwrap()
                .hash
        );
        fs::write(dir.join("src/a.py"), "print(2)\n").unwrap();
        assert_ne!(
            a.hash,
            assemble(&df, &dir.join("src"), &[], &[], &args, "base1")
                .unwrap()
                .hash
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn left_out_names_count_only_at_the_top() {
        let dir = std::env::temp_dir().join(format!("xtask-ctx-out-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("conf")).unwrap();
        fs::write(dir.join("Dockerfile"), "FROM x\n").unwrap();
        fs::write(dir.join("service.toml"), "name = \"a\"\n").unwrap();
        fs::write(dir.join("conf/service.toml"), "kept = true\n").unwrap();
        let df = fs::read(dir.join("Dockerfile")).unwrap();
        let args = BTreeMap::new();
        let a = assemble(&df, &dir, &["service.toml"], &[], &args, "b").unwrap();
        fs::write(dir.join("service.toml"), "name = \"a\"\n# edited\n").unwrap();
        let b = assemble(&df, &dir, &["service.toml"], &[], &args, "b").unwrap();
        assert_eq!(
            a.hash, b.hash,
            "the top-level descriptor is not in the context"
        );
        let names: Vec<String> = tar::Archive::new(&b.tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names.contains(&"conf/service.toml".to_string()),
            "{names:?}"
        );
        assert!(!names.contains(&"service.toml".to_string()), "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
