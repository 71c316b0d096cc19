//! Registration of MCP stdio servers with a desktop MCP client: `mcpServers` entries in
//! `claude_desktop_config.json`, merged into the user's file without touching anything else in
//! it.
//!
//! The file is the user's: its other keys and servers keep their values and their order. Key
//! order is kept by reading the JSON into `Json` below (objects as lists of pairs) rather than
//! by turning on serde_json's `preserve_order`, which would change the key order of every
//! `serde_json::Map` in the tool. A file that is not valid JSON is an error: it is never
//! replaced by one we wrote from scratch.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::service;
use crate::model::{Model, Service};

/// Overrides where the client's config file is (tests, unusual setups).
pub const CONFIG_ENV: &str = "XTASK_MCP_CLIENT_CONFIG";
const SERVERS: &str = "mcpServers";

/// The desktop client's config file on this machine.
pub fn config_path() -> Result<PathBuf> {
    config_path_for(std::env::consts::OS, |k| std::env::var_os(k))
}

fn config_path_for(os: &str, var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = set(CONFIG_ENV) {
        return Ok(p);
    }
    let file = Path::new("Claude").join("claude_desktop_config.json");
    let home = || set("HOME").context("HOME is not set: cannot find the MCP client's config");
    Ok(match os {
        "macos" => home()?.join("Library/Application Support").join(file),
        "windows" => set("APPDATA")
            .context("APPDATA is not set: cannot find the MCP client's config")?
            .join(file),
        // Electron apps keep their config under XDG_CONFIG_HOME, ~/.config by default.
        _ => match set("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
            Some(dir) => dir.join(file),
            None => home()?.join(".config").join(file),
        },
    })
}

/// `existing` (the file's text, `None` when there is no file) with `entries` added to
/// `mcpServers`, replacing servers of the same name in place.
pub fn merge(existing: Option<&str>, entries: &BTreeMap<String, Value>) -> Result<String> {
    let mut root = parse(existing.unwrap_or(""))?;
    let servers = servers(&mut root, true)?.expect("created");
    for (name, v) in entries {
        servers.set(name, Json::from(v.clone()));
    }
    show(&root)
}

/// `existing` without the servers `names`. Removing a server that is not there is no error.
pub fn remove(existing: &str, names: &[impl AsRef<str>]) -> Result<String> {
    let mut root = parse(existing)?;
    if let Some(servers) = servers(&mut root, false)? {
        for n in names {
            servers.remove(n.as_ref());
        }
    }
    show(&root)
}

fn parse(text: &str) -> Result<Json> {
    // An empty file holds nothing to keep; anything else must be a JSON object.
    if text.trim().is_empty() {
        return Ok(Json::Object(Vec::new()));
    }
    let v: Json =
        serde_json::from_str(text).context("the MCP client's config is not valid JSON")?;
    if !matches!(v, Json::Object(_)) {
        bail!("the MCP client's config is not a JSON object");
    }
    Ok(v)
}

fn servers(root: &mut Json, create: bool) -> Result<Option<&mut Json>> {
    let Json::Object(pairs) = &mut *root else {
        bail!("the MCP client's config is not a JSON object");
    };
    if !pairs.iter().any(|(k, _)| k == SERVERS) {
        if !create {
            return Ok(None);
        }
        pairs.push((SERVERS.to_string(), Json::Object(Vec::new())));
    }
    let servers = root.get_mut(SERVERS).expect("present");
    if !matches!(servers, Json::Object(_)) {
        bail!("`{SERVERS}` in the MCP client's config is not a JSON object");
    }
    Ok(Some(servers))
}

fn show(root: &Json) -> Result<String> {
    Ok(serde_json::to_string_pretty(root)? + "\n")
}

/// The `mcpServers` entry of an `mcp-stdio` service run from the source on this machine:
///
/// - `command`: the venv's python, when run.command starts with `python`/`python3`;
/// - `args`: the rest of run.command, its script resolved to a path in `source_dir` (the
///   command names it as the image sees it: under run.workdir, or relative);
/// - `env`: run.env without the variables that use secrets (`secret_env_names`: the caller
///   adds their values), with paths under a volume's mount point moved to `volume_dir`.
pub fn entry(model: &Model, name: &str, venv_python: &Path, source_dir: &Path) -> Result<Value> {
    let s = service(model, name)?;
    let run = s
        .spec
        .run
        .as_ref()
        .with_context(|| format!("`{name}` has no [run]"))?;
    let (first, rest) = run
        .command
        .split_first()
        .with_context(|| format!("`{name}` has no run.command"))?;
    let python = is_python(first);
    let command = if python {
        utf8(venv_python)?
    } else {
        first.clone()
    };
    let args = if python {
        python_args(rest, run.workdir.as_deref(), source_dir)?
    } else {
        rest.to_vec()
    };
    let mut env = serde_json::Map::new();
    for (k, v) in &run.env {
        if !uses_secret(v) {
            env.insert(k.clone(), Value::String(local_value(model, s, v)?));
        }
    }
    Ok(serde_json::json!({ "command": command, "args": args, "env": env }))
}

/// The env variables of `s` whose values use secrets: the entry leaves them out.
pub fn secret_env_names(s: &Service) -> Vec<String> {
    s.spec
        .run
        .iter()
        .flat_map(|r| &r.env)
        .filter(|(_, v)| uses_secret(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// `${NAME}` / `${service.NAME}` in an env value (the validator's reading of it).
fn uses_secret(value: &str) -> bool {
    value
        .find("${")
        .is_some_and(|i| value[i + 2..].contains('}'))
}

/// Where a volume of a locally run MCP server lives: in the workspace's ignored cache. The
/// caller creates it.
pub fn volume_dir(model: &Model, service: &str, volume: &str) -> PathBuf {
    model.root.join(".xtask/mcp").join(service).join(volume)
}

fn is_python(program: &str) -> bool {
    let base = program.rsplit('/').next().unwrap_or(program);
    base == "python"
        || base == "python3"
        || base
            .strip_prefix("python3.")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Python's argv after the interpreter, with the script (the first word that is not an
/// option) made a path in `source_dir`. `-m` and `-c` mean there is no script file.
fn python_args(args: &[String], workdir: Option<&str>, source_dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-m" | "-c" => {
                out.push(a.clone());
                out.extend(it.by_ref().cloned());
            }
            // Options that take the next word as their value.
            "-W" | "-X" => {
                out.push(a.clone());
                out.extend(it.next().cloned());
            }
            _ if a.starts_with('-') => out.push(a.clone()),
            _ => {
                out.push(utf8(&script_path(a, workdir, source_dir)?)?);
                out.extend(it.by_ref().cloned());
            }
        }
    }
    Ok(out)
}

/// The file on this machine that the image knows as `script`.
fn script_path(script: &str, workdir: Option<&str>, source_dir: &Path) -> Result<PathBuf> {
    let path = Path::new(script);
    if path.is_relative() {
        return Ok(source_dir.join(path));
    }
    if let Some(rel) = workdir.and_then(|w| path.strip_prefix(w).ok()) {
        return Ok(source_dir.join(rel));
    }
    // No workdir to go by (the image's WORKDIR is not in the descriptor): the longest tail
    // of the path that exists in the source.
    let parts: Vec<Component> = path.components().skip(1).collect();
    (1..parts.len())
        .map(|i| source_dir.join(parts[i..].iter().collect::<PathBuf>()))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "cannot find the script `{script}` in {}; set run.workdir to the image's WORKDIR",
                source_dir.display()
            )
        })
}

/// An env value as the server needs it here: a path under a volume's mount point moves to
/// that volume's local directory.
fn local_value(model: &Model, s: &Service, value: &str) -> Result<String> {
    for v in s.spec.run.iter().flat_map(|r| &r.volumes) {
        if let Ok(rest) = Path::new(value).strip_prefix(&v.target) {
            let dir = volume_dir(model, &s.name, &v.name);
            // join("") would add a trailing slash.
            let local = if rest.as_os_str().is_empty() {
                dir
            } else {
                dir.join(rest)
            };
            return utf8(&local);
        }
    }
    Ok(value.to_string())
}

fn utf8(p: &Path) -> Result<String> {
    p.to_str()
        .map(String::from)
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

/// A JSON value whose objects keep their keys in the order they were read.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(pairs) => pairs.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` where it already is (dropping repeats of it), or at the end.
    fn set(&mut self, key: &str, value: Json) {
        let Json::Object(pairs) = self else { return };
        match pairs.iter().position(|(k, _)| k == key) {
            Some(i) => {
                pairs[i].1 = value;
                let mut seen = 0;
                pairs.retain(|(k, _)| {
                    seen += usize::from(k == key);
                    k != key || seen == 1
                });
            }
            None => pairs.push((key.to_string(), value)),
        }
    }

    fn remove(&mut self, key: &str) {
        if let Json::Object(pairs) = self {
            pairs.retain(|(k, _)| k != key);
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Json {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Number(n),
            Value::String(s) => Json::String(s),
            Value::Array(a) => Json::Array(a.into_iter().map(Json::from).collect()),
            Value::Object(m) => Json::Object(m.into_iter().map(|(k, v)| (k, v.into())).collect()),
        }
    }
}

impl serde::Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Json::Object(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            pairs.push((k, v));
        }
        Ok(Json::Object(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use serde_json::json;

    fn one(name: &str, v: Value) -> BTreeMap<String, Value> {
        BTreeMap::from([(name.to_string(), v)])
    }

    const USER_FILE: &str = r#"{
  "zTheme": "dark",
  "mcpServers": {
    "zeta": {"command": "z", "args": []},
    "alpha": {"command": "a", "env": {"Z": "1", "A": "2"}}
  },
  "aLast": [1, 2.5, true, null, "x"]
}"#;

    #[test]
    fn merge_keeps_every_other_key_in_its_order() {
        let out = merge(Some(USER_FILE), &one("mine", json!({"command": "py"}))).unwrap();
        let order = |s: &str| out.find(s).unwrap();
        assert!(
            order("\"zTheme\"") < order("\"mcpServers\"")
                && order("\"mcpServers\"") < order("\"aLast\""),
            "{out}"
        );
        assert!(
            order("\"zeta\"") < order("\"alpha\"") && order("\"alpha\"") < order("\"mine\""),
            "{out}"
        );
        assert!(order("\"Z\": \"1\"") < order("\"A\": \"2\""), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["aLast"], json!([1, 2.5, true, null, "x"]));
        assert_eq!(v["mcpServers"]["mine"], json!({"command": "py"}));
        assert_eq!(v["mcpServers"]["zeta"], json!({"command": "z", "args": []}));
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn merge_replaces_in_place_and_is_idempotent() {
        let entries = one("zeta", json!({"command": "new"}));
        let once = merge(Some(USER_FILE), &entries).unwrap();
        assert!(
            once.find("\"zeta\"").unwrap() < once.find("\"alpha\"").unwrap(),
            "{once}"
        );
        assert!(!once.contains("\"z\""), "{once}");
        assert_eq!(merge(Some(&once), &entries).unwrap(), once);
    }

    #[test]
    fn merge_creates_the_file_and_the_servers_table() {
        let entries = one("s", json!({"command": "c"}));
        for existing in [None, Some(""), Some("  \n"), Some("{}")] {
            let out = merge(existing, &entries).unwrap();
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                v,
                json!({"mcpServers": {"s": {"command": "c"}}}),
                "{existing:?}"
            );
        }
    }

    #[test]
    fn unreadable_files_are_errors_not_overwritten() {
        let entries = one("s", json!({}));
        for bad in ["{\"a\": 1,}", "[1]", "not json", "{\"mcpServers\": []}"] {
            assert!(merge(Some(bad), &entries).is_err(), "{bad}");
        }
        assert!(remove("{", &["s"]).is_err());
    }

    #[test]
    fn remove_takes_only_the_named_servers() {
        let out = remove(USER_FILE, &["alpha", "absent"]).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["mcpServers"],
            json!({"zeta": {"command": "z", "args": []}})
        );
        assert_eq!(v["zTheme"], "dark");
        // Nothing to remove from: the file's content is unchanged.
        let none = remove("{\"a\": 1}", &["x"]).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&none).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn fixture_mcp_entry_runs_the_source_with_the_venv() {
        let m = fixture();
        let src = m.root.join("components/notes-mcp");
        let e = entry(&m, "notes-mcp", Path::new("/v/.venv/bin/python"), &src).unwrap();
        assert_eq!(e["command"], "/v/.venv/bin/python");
        // `python3 /app/server.py`, no workdir: found by the tail that exists in the source.
        assert_eq!(e["args"], json!([src.join("server.py").to_str().unwrap()]));
        assert_eq!(e["env"], json!({}));
    }

    const MCP: &str = r#"
name = "scan"
description = "d"
status = "active"
kind = "mcp-stdio"
[run]
command = ["python", "-u", "/app/servers/scan.py", "--flag", "/app/other"]
workdir = "/app"
volumes = [{ name = "cache", target = "/var/cache/scan" }]
[run.env]
CACHE_DIR = "/var/cache/scan"
LOG = "/var/cache/scan/logs/x.log"
USER_NAME = "me"
TOKEN = "${TOKEN}"
"#;

    #[test]
    fn entry_maps_workdir_paths_and_volumes_and_leaves_secrets_out() {
        let m = inline(&[MCP], &[]);
        let e = entry(&m, "scan", Path::new("/py"), Path::new("/src/scan")).unwrap();
        assert_eq!(
            e,
            json!({
                "command": "/py",
                "args": ["-u", "/src/scan/servers/scan.py", "--flag", "/app/other"],
                "env": {
                    "CACHE_DIR": "/work/space/.xtask/mcp/scan/cache",
                    "LOG": "/work/space/.xtask/mcp/scan/cache/logs/x.log",
                    "USER_NAME": "me",
                }
            })
        );
        assert_eq!(secret_env_names(m.service("scan").unwrap()), ["TOKEN"]);
    }

    #[test]
    fn python_args_forms() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let src = Path::new("/s");
        assert_eq!(
            python_args(&a(&["-m", "pkg.server", "x"]), None, src).unwrap(),
            a(&["-m", "pkg.server", "x"])
        );
        assert_eq!(
            python_args(&a(&["-X", "utf8", "srv.py", "a.py"]), None, src).unwrap(),
            a(&["-X", "utf8", "/s/srv.py", "a.py"])
        );
        assert!(python_args(&a(&["/nowhere/x.py"]), None, src).is_err());
        assert!(is_python("python3.11") && is_python("/usr/bin/python3") && !is_python("pythonx"));
    }

    #[test]
    fn repo_portfolio_entry() {
        let m = repo();
        let e = entry(
            &m,
            "portfolio-management",
            Path::new("/py"),
            Path::new("/src/pm"),
        )
        .unwrap();
        assert_eq!(e["args"], json!(["/src/pm/mcp_servers/scanner_server.py"]));
        assert!(e["env"].get("GITHUB_TOKEN").is_none(), "{e}");
        assert_eq!(e["env"]["GITHUB_USERNAME"], "zebadee2kk");
        assert!(e["env"]["PORTFOLIO_CACHE_DIR"]
            .as_str()
            .unwrap()
            .ends_with(".xtask/mcp/portfolio-management/cache"));
    }

    #[test]
    fn config_path_per_platform() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let home = &[("HOME", "/home/u")];
        assert_eq!(
            config_path_for("linux", env(home)).unwrap(),
            Path::new("/home/u/.config/Claude/claude_desktop_config.json")
        );
        assert_eq!(
            config_path_for(
                "linux",
                env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")])
            )
            .unwrap(),
            Path::new("/x/Claude/claude_desktop_config.json")
        );
        assert_eq!(
            config_path_for("macos", env(home)).unwrap(),
            Path::new("/home/u/Library/Application Support/Claude/claude_desktop_config.json")
        );
        assert_eq!(
            config_path_for("macos", env(&[("HOME", "/h"), (CONFIG_ENV, "/t/c.json")])).unwrap(),
            Path::new("/t/c.json")
        );
        assert!(config_path_for("linux", env(&[])).is_err());
    }
}
