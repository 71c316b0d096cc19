//! `onboard` end to end against a temp copy of the fixture ecosystem made into a real git
//! repository: secrets, hooks, idempotence, and no secret value in any output.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use tests::{copy_tree, fixtures, repo_root, text, xtask, TempDir};

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args([
            "-c",
            "user.name=xtask test",
            "-c",
            "user.email=test@xtask.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The fixture, committed to a fresh repository with the project's .gitignore.
fn workspace(dir: &TempDir) -> std::path::PathBuf {
    let ws = dir.path().join("eco");
    copy_tree(&fixtures().join("eco"), &ws);
    std::fs::copy(repo_root().join(".gitignore"), ws.join(".gitignore")).unwrap();
    assert!(git(&ws, &["init", "-q"]).status.success());
    assert!(git(&ws, &["add", "-A"]).status.success());
    assert!(git(&ws, &["commit", "-qm", "fixture"]).status.success());
    ws
}

fn env_values(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base64_url_decoded_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || !s.len().is_multiple_of(4)
    {
        return None;
    }
    Some(body.len() * 3 / 4)
}

#[test]
fn onboard_generates_secrets_once_installs_hook_and_never_prints_a_secret() {
    let dir = TempDir::new("onboard");
    let ws = workspace(&dir);
    let mut outputs = String::new();

    let first = xtask(&ws, &["onboard"]);
    outputs.push_str(&text(&first.stdout));
    outputs.push_str(&text(&first.stderr));
    assert!(first.status.success(), "{outputs}");

    let api_env = ws.join("services/notes-api/.env");
    let db_env = ws.join("services/notes-db/.env");
    for p in [&api_env, &db_env] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
        let rel = p.strip_prefix(&ws).unwrap().to_str().unwrap();
        assert!(
            git(&ws, &["check-ignore", "-q", rel]).status.success(),
            "{rel} not ignored"
        );
    }
    let api = env_values(&api_env);
    let db = env_values(&db_env);
    let hex = &api["API_SECRET"];
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        base64_url_decoded_len(&api["NOTES_ENCRYPTION_KEY"]),
        Some(32)
    );
    let pw = &db["POSTGRES_PASSWORD"];
    assert_eq!(pw.len(), 24);
    assert!(pw.bytes().all(|b| b.is_ascii_alphanumeric()));

    // Second run: the same values, nothing generated.
    let second = xtask(&ws, &["onboard"]);
    let out2 = format!("{}{}", text(&second.stdout), text(&second.stderr));
    outputs.push_str(&out2);
    assert!(second.status.success(), "{out2}");
    assert_eq!(env_values(&api_env), api);
    assert_eq!(env_values(&db_env), db);
    assert!(out2.contains("secrets: 0 generated"), "{out2}");

    // The hook refuses a commit that adds a secret value, naming the file but not the value.
    std::fs::write(ws.join("notes.txt"), format!("password is {pw}\n")).unwrap();
    assert!(git(&ws, &["add", "notes.txt"]).status.success());
    let commit = git(&ws, &["commit", "-qm", "leak"]);
    let refusal = format!("{}{}", text(&commit.stdout), text(&commit.stderr));
    outputs.push_str(&refusal);
    assert!(
        !commit.status.success(),
        "commit with a secret went through"
    );
    assert!(
        refusal.contains("notes.txt: contains a secret value"),
        "{refusal}"
    );
    assert!(git(&ws, &["reset", "-q", "notes.txt"]).status.success());

    // And one that force-adds an .env file.
    assert!(git(&ws, &["add", "-f", "services/notes-db/.env"])
        .status
        .success());
    let commit = git(&ws, &["commit", "-qm", "env"]);
    let refusal = format!("{}{}", text(&commit.stdout), text(&commit.stderr));
    outputs.push_str(&refusal);
    assert!(!commit.status.success());
    assert!(
        refusal.contains("services/notes-db/.env: an .env file"),
        "{refusal}"
    );
    assert!(git(&ws, &["reset", "-q", "services/notes-db/.env"])
        .status
        .success());

    // A clean commit still goes through.
    std::fs::write(ws.join("notes.txt"), "nothing secret\n").unwrap();
    assert!(git(&ws, &["add", "notes.txt"]).status.success());
    let ok = git(&ws, &["commit", "-qm", "fine"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    for secret in api.values().chain(db.values()) {
        assert!(
            !outputs.contains(secret.as_str()),
            "a secret value was printed"
        );
    }
}

#[test]
fn check_fails_when_git_tracks_a_secret() {
    let dir = TempDir::new("tracked-secret");
    let ws = workspace(&dir);
    let env = ws.join("services/notes-api/.env");
    std::fs::write(&env, "API_SECRET=0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(
        ws.join("config.txt"),
        "key: 0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    assert!(git(&ws, &["add", "config.txt"]).status.success());
    let out = xtask(&ws, &["check"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("config.txt: contains a secret value"), "{err}");
    assert!(!err.contains("0123456789abcdef0123456789abcdef"), "{err}");
}
