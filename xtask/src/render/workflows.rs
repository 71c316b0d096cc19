//! GitHub Actions workflow files for a `workflow` service's `[[workflows]]`, and the
//! `gh secret set` commands that give the repository the secrets they read (names only).
//!
//! Every string from a descriptor is written as a JSON string, which YAML reads as a double
//! quoted scalar with the same escapes, so no value can end a line or start a mapping; a
//! multi-line `run` step becomes a literal block when it can be one, for the reader.

use anyhow::{bail, Context, Result};

use super::{service, sh};
use crate::model::{Model, Workflow};

/// GitHub reserves secret names starting with this; the runner provides GITHUB_TOKEN itself.
const RESERVED: &str = "GITHUB_";

/// `(path inside the component's repository, YAML)` per workflow, in descriptor order.
pub fn files(model: &Model, name: &str) -> Result<Vec<(String, String)>> {
    let s = service(model, name)?;
    s.spec
        .workflows
        .iter()
        .map(|w| {
            let yaml = workflow(name, w).with_context(|| format!("workflow `{}`", w.name))?;
            Ok((format!(".github/workflows/{}.yml", w.name), yaml))
        })
        .collect()
}

fn workflow(service: &str, w: &Workflow) -> Result<String> {
    let mut y = format!(
        "# Workflow `{0}` of `{service}`, rendered by `cargo xtask` from\n\
         # services/{service}/service.toml: change the descriptor, not this file.\n\
         name: {1}\n",
        w.name,
        string(&w.name)
    );
    y.push_str(&triggers(w)?);
    y.push_str(&permissions(w));
    y.push_str("jobs:\n  run:\n    runs-on: ubuntu-latest\n    steps:\n");
    y.push_str("      - uses: actions/checkout@v4\n");
    if let Some(v) = &w.python {
        y.push_str(&format!(
            "      - uses: actions/setup-python@v5\n        with:\n          python-version: {}\n",
            string(v)
        ));
    }
    if let Some(install) = &w.install {
        // No secrets here: what pip installs never sees them.
        y.push_str(&format!(
            "      - name: Install\n        run: {}\n",
            text(install, 10)
        ));
    }
    y.push_str(&format!(
        "      - name: Run\n        run: {}\n",
        text(&w.run, 10)
    ));
    if !w.secrets.is_empty() {
        y.push_str("        env:\n");
        for name in &w.secrets {
            if !is_secret_name(name) {
                bail!("invalid secret name `{name}`");
            }
            y.push_str(&format!(
                "          {name}: {}\n",
                string(&format!("${{{{ secrets.{name} }}}}"))
            ));
        }
    }
    Ok(y)
}

fn triggers(w: &Workflow) -> Result<String> {
    if w.schedule.is_empty() && !w.manual {
        bail!("no trigger: give it a `schedule` or `manual = true`");
    }
    let mut y = "on:\n".to_string();
    if !w.schedule.is_empty() {
        y.push_str("  schedule:\n");
        for cron in &w.schedule {
            y.push_str(&format!("    - cron: {}\n", string(&five_fields(cron))));
        }
    }
    if w.manual {
        y.push_str("  workflow_dispatch: {}\n");
    }
    Ok(y)
}

/// GitHub takes five cron fields only; the validator also admits `@daily` and friends.
fn five_fields(cron: &str) -> String {
    match cron.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    }
    .to_string()
}

/// The descriptor's permissions, plus `contents: read` when they leave it out: declaring any
/// permission sets every other one to none, and the checkout step needs to read the code.
/// No permissions declared: the repository's default token permissions apply.
fn permissions(w: &Workflow) -> String {
    if w.permissions.is_empty() {
        return String::new();
    }
    let mut perms = w.permissions.clone();
    perms
        .entry("contents".to_string())
        .or_insert_with(|| "read".to_string());
    let mut y = "permissions:\n".to_string();
    for (k, v) in &perms {
        y.push_str(&format!("  {}: {}\n", key(k), string(v)));
    }
    y
}

/// A JSON string: a valid YAML double-quoted scalar meaning the same text. JSON leaves DEL,
/// the C1 controls and U+FFFE/U+FFFF raw, which YAML does not allow in a file (or, for NEL,
/// reads as a line break in YAML 1.1): escape them.
fn string(s: &str) -> String {
    let json = serde_json::Value::String(s.to_string()).to_string();
    json.chars()
        .map(|c| {
            if yaml_printable(c) {
                c.to_string()
            } else {
                format!("\\u{:04x}", u32::from(c))
            }
        })
        .collect()
}

/// YAML's c-printable (less NEL), for characters above the ASCII controls JSON escapes.
fn yaml_printable(c: char) -> bool {
    !matches!(c, '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}')
}

/// A mapping key: bare when plainly a word YAML cannot read as anything else.
fn key(s: &str) -> String {
    const SPECIAL: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "",
    ];
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with('-')
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        string(s)
    }
}

/// A shell step: a literal block (`|`) for multi-line text that a block can hold exactly,
/// else a JSON string. `indent` is the column of the step's keys plus two.
fn text(s: &str, indent: usize) -> String {
    let blockable = s.contains('\n')
        && !s.starts_with([' ', '\t', '\n'])
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || (!c.is_control() && yaml_printable(c)))
        && !s.contains('\u{feff}');
    if !blockable {
        return string(s);
    }
    let body = s.trim_end_matches('\n');
    // Chomping: `|-` no final line break, `|` one, `|+` keep them all.
    let chomp = match s.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}\n");
    let lines: Vec<&str> = if chomp == "+" {
        s.strip_suffix('\n').unwrap_or(s).split('\n').collect()
    } else {
        body.split('\n').collect()
    };
    let n = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        if i + 1 < n {
            out.push('\n');
        }
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// `owner/repo` of a GitHub remote: `https://github.com/o/r(.git)`, `git@github.com:o/r.git`
/// or `ssh://git@github.com/o/r.git`.
pub fn github_repo(url: &str) -> Result<String> {
    let rest = [
        "https://github.com/",
        "http://github.com/",
        "ssh://git@github.com/",
        "git@github.com:",
    ]
    .iter()
    .find_map(|p| url.strip_prefix(p))
    .with_context(|| format!("`{url}` is not a GitHub repository URL"))?;
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['-', '.'])
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match rest.split_once('/') {
        Some((owner, repo)) if ok(owner) && ok(repo) => Ok(format!("{owner}/{repo}")),
        _ => bail!("`{url}` does not name a GitHub owner/repository"),
    }
}

/// The secrets the repository must hold: the service's declared ones and any its workflows
/// read, without the reserved `GITHUB_*` names.
pub fn secret_names(model: &Model, name: &str) -> Result<Vec<String>> {
    let s = service(model, name)?;
    let mut out: Vec<String> = Vec::new();
    let declared = s.spec.secrets.iter().map(|x| &x.name);
    let used = s.spec.workflows.iter().flat_map(|w| &w.secrets);
    for n in declared.chain(used) {
        if !n.starts_with(RESERVED) && !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

fn repo_of(model: &Model, name: &str) -> Result<String> {
    let s = service(model, name)?;
    let git = s
        .spec
        .source
        .as_ref()
        .and_then(|src| src.git.as_deref())
        .with_context(|| format!("`{name}` has no git [source] naming its repository"))?;
    github_repo(git)
}

/// The argv of `gh secret set NAME --repo OWNER/REPO` per secret. `gh` reads the value from
/// stdin when it is not a terminal: the caller writes it there, never on a command line.
pub fn secret_argv(model: &Model, name: &str) -> Result<Vec<Vec<String>>> {
    let repo = repo_of(model, name)?;
    Ok(secret_names(model, name)?
        .into_iter()
        .map(|n| {
            ["gh", "secret", "set", &n, "--repo", &repo]
                .map(String::from)
                .to_vec()
        })
        .collect())
}

/// The same commands as shell lines for a human (each asks for its value).
pub fn secret_commands(model: &Model, name: &str) -> Result<Vec<String>> {
    let repo = sh(&repo_of(model, name)?)?;
    secret_names(model, name)?
        .iter()
        .map(|n| Ok(format!("gh secret set {} --repo {repo}", sh(n)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const TOWER: &str = r#"
name = "tower"
description = "d"
status = "active"
kind = "workflow"
[source]
git = "https://github.com/acme/tower.git"
rev = "main"
[[secrets]]
name = "API_KEY"
from_env = true
[[secrets]]
name = "UNUSED_BY_WORKFLOWS"
from_env = true
[[workflows]]
name = "nightly"
schedule = ["0 21 * * *", "@weekly"]
manual = true
python = "3.11"
install = "pip install -r requirements.txt"
run = "env HOME=\"$RUNNER_TEMP\" python -m src.run"
secrets = ["GITHUB_TOKEN", "API_KEY"]
permissions = { issues = "write" }
[[workflows]]
name = "ci"
manual = true
run = """
ruff check src/
  pytest: "tests" # not a comment
"""
"#;

    fn tower() -> Model {
        inline(&[TOWER], &[])
    }

    #[test]
    fn scheduled_python_workflow() {
        let files = files(&tower(), "tower").unwrap();
        assert_eq!(files.len(), 2);
        let (path, y) = &files[0];
        assert_eq!(path, ".github/workflows/nightly.yml");
        let want = "name: \"nightly\"\n\
on:\n  schedule:\n    - cron: \"0 21 * * *\"\n    - cron: \"0 0 * * 0\"\n  workflow_dispatch: {}\n\
permissions:\n  contents: \"read\"\n  issues: \"write\"\n\
jobs:\n  run:\n    runs-on: ubuntu-latest\n    steps:\n\
\x20     - uses: actions/checkout@v4\n\
\x20     - uses: actions/setup-python@v5\n        with:\n          python-version: \"3.11\"\n\
\x20     - name: Install\n        run: \"pip install -r requirements.txt\"\n\
\x20     - name: Run\n        run: \"env HOME=\\\"$RUNNER_TEMP\\\" python -m src.run\"\n\
\x20       env:\n\
\x20         GITHUB_TOKEN: \"${{ secrets.GITHUB_TOKEN }}\"\n\
\x20         API_KEY: \"${{ secrets.API_KEY }}\"\n";
        assert!(y.ends_with(want), "{y}");
        assert!(y.starts_with("# Workflow `nightly` of `tower`"), "{y}");
    }

    #[test]
    fn manual_only_workflow_with_a_multiline_step() {
        let files = files(&tower(), "tower").unwrap();
        let (_, y) = &files[1];
        assert!(y.contains("on:\n  workflow_dispatch: {}\njobs:"), "{y}");
        // No permissions declared: the key is left out (repository defaults), no env.
        assert!(!y.contains("permissions:") && !y.contains("env:"), "{y}");
        assert!(!y.contains("setup-python") && !y.contains("Install"), "{y}");
        assert!(
            y.ends_with(
                "        run: |\n          ruff check src/\n            pytest: \"tests\" # not a comment\n"
            ),
            "{y}"
        );
    }

    #[test]
    fn text_chooses_block_or_string() {
        assert_eq!(text("a", 4), "\"a\"");
        assert_eq!(text("a\nb", 4), "|-\n    a\n    b");
        assert_eq!(text("a\n\nb\n", 4), "|\n    a\n\n    b");
        assert_eq!(text("a\n\n", 4), "|+\n    a\n");
        // A first line that starts with spaces cannot set a block's indentation: a string.
        assert_eq!(text("  a\nb", 4), "\"  a\\nb\"");
        assert_eq!(text("a\r\nb", 4), "\"a\\r\\nb\"");
        assert_eq!(text("a\u{7f}\nb", 4), "\"a\\u007f\\nb\"");
        assert_eq!(string("\u{85}\u{9f}é"), "\"\\u0085\\u009fé\"");
    }

    #[test]
    fn hostile_values_stay_scalars() {
        let t = TOWER.replace("python = \"3.11\"", "python = \"3.11\\\"\\n  evil: true\"");
        let m = inline(&[&t], &[]);
        let y = &files(&m, "tower").unwrap()[0].1;
        assert!(
            y.contains("python-version: \"3.11\\\"\\n  evil: true\"\n"),
            "{y}"
        );
        assert_eq!(key("on"), "\"on\"");
        assert_eq!(key("Y"), "\"Y\"");
        assert_eq!(key("pull-requests"), "pull-requests");
        assert_eq!(key("a: b"), "\"a: b\"");
    }

    #[test]
    fn secret_names_cannot_inject_expressions() {
        let t = TOWER.replace(
            "secrets = [\"GITHUB_TOKEN\", \"API_KEY\"]",
            "secrets = [\"X }} ${{ github.token\"]",
        );
        let m = inline(&[&t], &[]);
        assert!(files(&m, "tower").is_err());
    }

    #[test]
    fn workflow_without_trigger_is_an_error() {
        let t = TOWER.replace("name = \"ci\"\nmanual = true", "name = \"ci\"");
        let m = inline(&[&t], &[]);
        let err = format!("{:#}", files(&m, "tower").unwrap_err());
        assert!(err.contains("no trigger"), "{err}");
    }

    #[test]
    fn secret_commands_name_secrets_never_values() {
        let m = tower();
        assert_eq!(
            secret_commands(&m, "tower").unwrap(),
            [
                "gh secret set 'API_KEY' --repo 'acme/tower'",
                "gh secret set 'UNUSED_BY_WORKFLOWS' --repo 'acme/tower'",
            ]
        );
        let argv = secret_argv(&m, "tower").unwrap();
        assert_eq!(
            argv[0],
            ["gh", "secret", "set", "API_KEY", "--repo", "acme/tower"]
        );
    }

    #[test]
    fn github_repo_forms() {
        for url in [
            "https://github.com/o/r",
            "https://github.com/o/r.git",
            "https://github.com/o/r/",
            "git@github.com:o/r.git",
            "ssh://git@github.com/o/r",
        ] {
            assert_eq!(github_repo(url).unwrap(), "o/r", "{url}");
        }
        for url in [
            "https://gitlab.com/o/r",
            "https://github.com/o",
            "https://github.com/o/r/x",
            "https://github.com/-o/r",
        ] {
            assert!(github_repo(url).is_err(), "{url}");
        }
    }

    #[test]
    fn repo_control_tower_workflows() {
        let m = repo();
        let files = files(&m, "control-tower").unwrap();
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert!(names.contains(&".github/workflows/enhanced-decision-desk.yml"));
        let desk = &files
            .iter()
            .find(|(p, _)| p.ends_with("enhanced-decision-desk.yml"))
            .unwrap()
            .1;
        assert!(desk.contains("    - cron: \"10 21 * * *\"\n"), "{desk}");
        assert!(
            desk.contains("GITHUB_TOKEN: \"${{ secrets.GITHUB_TOKEN }}\""),
            "{desk}"
        );
        let cmds = secret_commands(&m, "control-tower").unwrap();
        assert!(cmds
            .iter()
            .all(|c| c.ends_with("--repo 'zebadee2kk/control-tower'")));
        assert!(!cmds.iter().any(|c| c.contains("GITHUB_")), "{cmds:?}");
    }
}
