//! Benchmarks that print numbers (not tests): `cargo bench -p tests --bench pipeline`.
//!
//! On a temp copy of the fixture ecosystem: no-op build, one-service rebuild, cold builds of
//! all fixture images with one job vs in parallel (as a ratio), and warm smoke split into
//! start, checks and teardown. Needs Docker; the base images are made first if missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tests::{copy_tree, fixtures, median, text, xtask, TempDir};

fn timed(ws: &Path, args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = xtask(ws, args);
    assert!(
        out.status.success(),
        "{:?} failed:\n{}",
        args,
        text(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn hashed_images() -> BTreeSet<String> {
    let out = Command::new("docker")
        .args([
            "image",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            "label=xtask.hash",
        ])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(String::from).collect()
}

/// Makes every fixture Dockerfile miss docker's layer cache from its first step on (the base
/// stays), so a build is as cold as it gets without remaking the base images.
fn bust_layer_cache(ws: &Path, nonce: &str) {
    for svc in ["notes-api", "notes-db", "notes-mcp"] {
        let p = ws.join("services").join(svc).join("Dockerfile");
        let text = std::fs::read_to_string(&p).unwrap();
        let mut out = String::new();
        let mut done = false;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if !done && line.starts_with("FROM ") {
                out.push_str(&format!("RUN echo {nonce} > /.bench-nonce\n"));
                done = true;
            }
        }
        std::fs::write(&p, out).unwrap();
    }
}

fn main() {
    let dir = TempDir::new("bench");
    let ws = dir.path().join("eco");
    copy_tree(&fixtures().join("eco"), &ws);
    let before = hashed_images();

    let first = timed(&ws, &["build"]);
    println!("first build (bases and images as present on this machine): {first:.1}s");

    let noop = median((0..5).map(|_| timed(&ws, &["build"])).collect());
    println!("no-op build, median of 5: {:.3}s", noop);

    let mcp = ws.join("components/notes-mcp/server.py");
    let change: Vec<f64> = (0..3)
        .map(|i| {
            let mut s = std::fs::read_to_string(&mcp).unwrap();
            s.push_str(&format!("# bench change {i}\n"));
            std::fs::write(&mcp, s).unwrap();
            timed(&ws, &["build"])
        })
        .collect();
    println!(
        "one-service change (notes-mcp), median of 3: {:.1}s",
        median(change)
    );

    let nonce = format!("{}", std::process::id());
    bust_layer_cache(&ws, &format!("seq-{nonce}"));
    let seq = timed(&ws, &["build", "--jobs", "1"]);
    bust_layer_cache(&ws, &format!("par-{nonce}"));
    let par = timed(&ws, &["build", "--jobs", "3"]);
    println!("cold build of 3 images: sequential {seq:.1}s, parallel {par:.1}s, ratio sequential/parallel {:.2}", seq / par);

    let mut start = Vec::new();
    let mut checks = Vec::new();
    let mut teardown = Vec::new();
    let mut total = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = xtask(&ws, &["smoke"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        total.push(t.elapsed().as_secs_f64());
        let err = text(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("timings:"))
            .expect("timings line");
        let num = |key: &str| -> f64 {
            let rest = &line[line.find(key).unwrap() + key.len()..];
            rest.trim_start()
                .split('s')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        start.push(num("start"));
        checks.push(num("checks"));
        teardown.push(num("teardown"));
    }
    println!(
        "warm smoke, median of 3: total {:.1}s = start {:.1}s + checks {:.1}s + teardown {:.1}s (+ cached build and sweep)",
        median(total),
        median(start),
        median(checks),
        median(teardown)
    );

    // Remove the images this benchmark made (not the ones that existed before).
    let made: Vec<String> = hashed_images().difference(&before).cloned().collect();
    if !made.is_empty() {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f"])
            .args(&made)
            .output();
    }
}
