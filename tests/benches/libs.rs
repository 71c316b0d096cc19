//! Benchmark that prints numbers (not a test): `cargo bench -p tests --bench libs`.
//!
//! The `libs` step on a temp copy of the fixture ecosystem (greet-lib editable from its
//! pyproject, plain-lib as a path entry plus `six`):
//! - cold: fresh venv and empty package caches (every download and build done again), uv vs
//!   pip, median of 3 each, and the ratio pip/uv;
//! - fresh venv with warm caches (re-onboarding a machine that has done it before);
//! - warm: nothing changed, no install runs (median of 5).
//!
//! uv comes from `libs --install-uv` into the temp workspace. Needs python3 >= 3.11 and PyPI.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tests::{copy_tree, fixtures, median, runs, text, xtask_bin, TempDir};

/// Runs `xtask libs ARGS` with the package caches in `cache`; returns seconds and the number
/// of install commands it reported.
fn libs(ws: &Path, cache: &Path, args: &[&str]) -> (f64, u64) {
    let t = Instant::now();
    let out = Command::new(xtask_bin())
        .arg("--workspace")
        .arg(ws)
        .arg("libs")
        .arg("--json")
        .args(args)
        .env("UV_CACHE_DIR", cache.join("uv"))
        .env("PIP_CACHE_DIR", cache.join("pip"))
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "libs {args:?} failed:\n{}",
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (secs, json["installs"].as_u64().unwrap())
}

fn main() {
    let dir = TempDir::new("bench-libs");
    let ws = dir.path().join("eco");
    copy_tree(&fixtures().join("eco"), &ws);
    let venv = ws.join(".venv");
    let fresh_venv = || {
        if venv.exists() {
            std::fs::remove_dir_all(&venv).unwrap();
        }
    };

    // uv for this workspace (and a first run that is not measured).
    let warm_cache = dir.path().join("cache-warm");
    libs(&ws, &warm_cache, &["--install-uv"]);

    let mut cold = [Vec::new(), Vec::new()];
    let mut warm_cache_runs = [Vec::new(), Vec::new()];
    for i in 0..3 {
        for (k, installer) in ["uv", "pip"].into_iter().enumerate() {
            fresh_venv();
            let empty = dir.path().join(format!("cache-{installer}-{i}"));
            let (secs, installs) = libs(&ws, &empty, &["--installer", installer]);
            assert_eq!(installs, 2);
            cold[k].push(secs);

            fresh_venv();
            let (secs, _) = libs(&ws, &warm_cache, &["--installer", installer]);
            warm_cache_runs[k].push(secs);
        }
    }
    // The installer is part of what defines an install: the last run above used pip, so one
    // run with the default installer (uv, found in .xtask/bin) first.
    libs(&ws, &warm_cache, &[]);
    let mut noop = Vec::new();
    for _ in 0..5 {
        let (secs, installs) = libs(&ws, &warm_cache, &[]);
        assert_eq!(installs, 0, "a warm run installs nothing");
        noop.push(secs);
    }

    let (uv, pip) = (median(cold[0].clone()), median(cold[1].clone()));
    println!("libs, 2 fixture libraries (greet-lib editable, plain-lib path entry + six)");
    println!("cold (fresh venv, empty caches), median of 3:");
    println!("  uv   {uv:>6.2}s   runs: {}", runs(&cold[0]));
    println!("  pip  {pip:>6.2}s   runs: {}", runs(&cold[1]));
    println!("  ratio pip/uv: {:.1}x", pip / uv);
    let (uv_w, pip_w) = (
        median(warm_cache_runs[0].clone()),
        median(warm_cache_runs[1].clone()),
    );
    println!("fresh venv, warm caches, median of 3:");
    println!("  uv   {uv_w:>6.2}s   runs: {}", runs(&warm_cache_runs[0]));
    println!("  pip  {pip_w:>6.2}s   runs: {}", runs(&warm_cache_runs[1]));
    println!("  ratio pip/uv: {:.1}x", pip_w / uv_w);
    println!(
        "warm (nothing changed, 0 installs), median of 5: {:.3}s   runs: {}",
        median(noop.clone()),
        runs(&noop)
    );
}
