//! `check` against the repository, the fixture ecosystem and every invalid fixture.
//!
//! Each directory under `tests/fixtures/invalid/` is a workspace with one thing wrong and an
//! `expected.txt` holding the exact error output. `UPDATE_EXPECT=1 cargo test --test check`
//! rewrites the expectations (review the diff before committing it).

use std::fs;

use tests::{fixtures, repo_root, text, xtask};

#[test]
fn repository_descriptors_pass_check() {
    let out = xtask(&repo_root(), &["check"]);
    assert!(
        out.status.success(),
        "check failed on the repository:\n{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    // The planned components are listed, not hidden.
    for planned in ["idea-vault", "kynee", "work-os-control-plane"] {
        assert!(
            stdout.contains(planned),
            "{planned} missing from:\n{stdout}"
        );
    }
}

#[test]
fn fixture_ecosystem_passes_check() {
    let out = xtask(&fixtures().join("eco"), &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("planned"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn invalid_fixtures_give_their_expected_errors() {
    let dir = fixtures().join("invalid");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} invalid fixtures", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = xtask(case, &["check"]);
        let stderr = text(&out.stderr);
        // A panic is never an acceptable answer to bad input.
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked:\n{stderr}"));
            continue;
        }
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{name}: exit code {:?}, expected 1",
                out.status.code()
            ));
            continue;
        }
        let expected_path = case.join("expected.txt");
        if update {
            fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{name}: no expected.txt (run with UPDATE_EXPECT=1)"));
        if expected != stderr {
            failures.push(format!(
                "{name}: output differs\n--- expected\n{expected}\n--- actual\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
