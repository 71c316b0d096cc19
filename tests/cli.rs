//! `status`/`ls` and `doctor` through the real binary.

use tests::{fixtures, repo_root, text, xtask};

#[test]
fn status_prints_every_component_of_the_fixture() {
    let eco = fixtures().join("eco");
    let out = xtask(&eco, &["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap();
    for col in [
        "component",
        "runs where",
        "model",
        "data",
        "backup",
        "status",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let json = xtask(&eco, &["ls", "--json"]);
    assert!(json.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    // One table line per JSON row (after header and rule), and the same components.
    assert_eq!(table.lines().count(), rows.len() + 2);
    for row in rows {
        let name = row["component"].as_str().unwrap();
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} not in table"
        );
    }
    assert!(rows.iter().any(|r| r["status"] == "planned"));
}

#[test]
fn status_of_the_real_ecosystem_lists_planned_components() {
    let out = xtask(&repo_root(), &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["component"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    assert_eq!(find("idea-vault")["status"], "planned");
    assert_eq!(find("zebra-ecosystem")["kind"], "lib");
    let api = find("ai-cost-tracker-api");
    assert_eq!(api["status"], "active");
    assert!(api["runs_where"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == "homelab"));
}

#[test]
fn doctor_reports_every_tool_and_fails_when_one_is_missing() {
    // With PATH emptied nothing can be found: every tool is reported, all at once, with how to
    // install it, and the exit code says something required is missing.
    let out = std::process::Command::new(tests::xtask_bin())
        .arg("doctor")
        .env("PATH", "")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for tool in [
        "docker",
        "git",
        "python3",
        "uv or pip",
        "ssh",
        "debootstrap",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("MISSING") && l.contains(tool)),
            "{tool} not reported missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("apt-get install git"), "{stdout}");
}

#[test]
fn doctor_reports_this_machine_truthfully() {
    let out = std::process::Command::new(tests::xtask_bin())
        .arg("doctor")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    // Whatever it says about git must match git itself.
    let git = std::process::Command::new("git")
        .arg("--version")
        .output()
        .unwrap();
    let git_version = text(&git.stdout).trim().to_string();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains(&git_version)),
        "{stdout}"
    );
    let all_ok = stdout
        .lines()
        .filter(|l| !l.is_empty())
        .take(6)
        .all(|l| l.starts_with("ok"));
    assert_eq!(out.status.success(), all_ok, "{stdout}");
}
