//! Benchmark that prints numbers (not a test): `cargo bench -p tests --bench onboard`.
//!
//! `onboard` on a temp copy of the fixture ecosystem made into a git repository:
//! - cold: a fresh clone's state (no venv, no secrets, no hook; empty package caches), median
//!   of 3;
//! - warm: everything already done, nothing to do (median of 5), and the ratio cold/warm.
//!
//! Uses the machine's installer choice (uv when present, else pip); needs PyPI for cold runs.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tests::{copy_tree, fixtures, median, repo_root, runs, text, xtask_bin, TempDir};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=xtask bench",
            "-c",
            "user.email=bench@xtask.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

fn onboard(ws: &Path, cache: &Path) -> f64 {
    let t = Instant::now();
    let out = Command::new(xtask_bin())
        .arg("--workspace")
        .arg(ws)
        .arg("onboard")
        .env("UV_CACHE_DIR", cache.join("uv"))
        .env("PIP_CACHE_DIR", cache.join("pip"))
        .env("CI", "1")
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "onboard failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    secs
}

/// What a fresh clone does not have: the venv, the generated env files, the hook.
fn reset(ws: &Path) {
    for p in [".venv", ".xtask"] {
        let _ = std::fs::remove_dir_all(ws.join(p));
    }
    for entry in std::fs::read_dir(ws.join("services")).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path().join(".env"));
    }
    let _ = std::fs::remove_file(ws.join(".git/hooks/pre-commit"));
}

fn main() {
    let dir = TempDir::new("bench-onboard");
    let ws = dir.path().join("eco");
    copy_tree(&fixtures().join("eco"), &ws);
    std::fs::copy(repo_root().join(".gitignore"), ws.join(".gitignore")).unwrap();
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "fixture"]);

    let mut cold = Vec::new();
    for i in 0..3 {
        reset(&ws);
        cold.push(onboard(&ws, &dir.path().join(format!("cache-{i}"))));
    }
    let cache = dir.path().join("cache-2");
    let mut warm = Vec::new();
    for _ in 0..5 {
        warm.push(onboard(&ws, &cache));
    }
    let (c, w) = (median(cold.clone()), median(warm.clone()));
    println!("onboard, fixture ecosystem (2 libs, 2 services with secrets, hook)");
    println!(
        "  cold (fresh clone, empty caches), median of 3: {c:>6.2}s   runs: {}",
        runs(&cold)
    );
    println!(
        "  warm (nothing to do), median of 5:             {w:>6.3}s   runs: {}",
        runs(&warm)
    );
    println!("  ratio cold/warm: {:.0}x", c / w);
}
