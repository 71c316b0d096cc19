//! Running one declared check against a started service.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::model::{Check, HttpCheck, McpCheck};
use crate::{http, proc};

/// How a check reaches the service under test.
pub struct Target<'a> {
    /// Running container (for `docker exec`), if the service runs as a daemon.
    pub container: Option<&'a str>,
    /// `docker run` argv prefix that starts a fresh container of the service's image with its
    /// network and env file (for MCP servers and services that do not run as daemons).
    pub run_prefix: Vec<String>,
    pub image: &'a str,
    /// Container port -> published loopback address.
    pub ports: &'a BTreeMap<u16, SocketAddr>,
    /// The most one check may take (a health wait's time left until its deadline); `None`
    /// keeps each kind's own timeouts.
    pub limit: Option<Duration>,
}

impl Target<'_> {
    /// `usual`, shortened to the limit when there is one.
    fn within(&self, usual: Duration) -> Duration {
        match self.limit {
            Some(l) => usual.min(l.max(Duration::from_millis(100))),
            None => usual,
        }
    }
}

/// Imports `sys.argv[1]` and walks the attribute path `sys.argv[2]` (`a.b`, may be empty).
/// The names travel as argv, never inside the program text.
pub const IMPORT_PROGRAM: &str = "import importlib, sys\nm = importlib.import_module(sys.argv[1])\nfor a in filter(None, sys.argv[2].split('.')):\n    m = getattr(m, a)\n";

/// Runs one check; `vars` carries values captured by earlier checks of the same service.
pub fn run(
    check: &Check,
    target: &Target<'_>,
    vars: &mut BTreeMap<String, String>,
) -> Result<String> {
    match check {
        Check::Http(h) => http_check(h, target, vars),
        Check::Tcp(t) => {
            let addr = addr(target, t.port)?;
            let mut stream =
                std::net::TcpStream::connect_timeout(&addr, target.within(Duration::from_secs(3)))
                    .with_context(|| format!("port {} ({addr}) is not open", t.port))?;
            // Docker's port proxy accepts on the published port whether or not anything listens
            // in the container, and closes the connection as soon as its own connect is
            // refused. So an accepted connection proves nothing; one that is closed at once,
            // without a byte, means nothing listens. A real server either waits for the client
            // (the read times out) or greets it.
            stream.set_read_timeout(Some(target.within(Duration::from_millis(500))))?;
            match stream.read(&mut [0u8; 1]) {
                Ok(0) => bail!(
                    "port {} ({addr}): the connection was closed at once; nothing listens on {} in the container",
                    t.port,
                    t.port
                ),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => bail!("port {} ({addr}): {e}", t.port),
            }
            Ok(format!("port {} open", t.port))
        }
        Check::Command(c) => {
            let out = exec(target, &c.command)?;
            let code = out.status.code().unwrap_or(-1);
            let stdout = String::from_utf8_lossy(&out.stdout);
            if code != c.exit_code {
                bail!(
                    "exit code {code}, expected {}\n{}",
                    c.exit_code,
                    proc::tail(
                        &format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
                        10
                    )
                );
            }
            if let Some(want) = &c.stdout_contains {
                if !stdout.contains(want.as_str()) {
                    bail!(
                        "output does not contain {want:?}:\n{}",
                        proc::tail(&stdout, 10)
                    );
                }
            }
            Ok(format!("exit code {code}"))
        }
        Check::PythonImport(p) => {
            let (module, attr) = p.import.split_once(':').unwrap_or((p.import.as_str(), ""));
            let argv: Vec<String> = ["python3", "-c", IMPORT_PROGRAM, module, attr]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let out = exec(target, &argv)?;
            if !out.status.success() {
                bail!(
                    "import {} failed:\n{}",
                    p.import,
                    proc::tail(&String::from_utf8_lossy(&out.stderr), 5)
                );
            }
            Ok(format!("import {}", p.import))
        }
        Check::Mcp(m) => mcp_check(m, target),
    }
}

fn addr(target: &Target<'_>, port: u16) -> Result<SocketAddr> {
    target
        .ports
        .get(&port)
        .copied()
        .with_context(|| format!("port {port} is not published by the container"))
}

/// Runs argv in the service's running container, or in a fresh one from its image.
fn exec(target: &Target<'_>, argv: &[String]) -> Result<std::process::Output> {
    let mut cmd = match target.container {
        Some(c) => {
            let mut cmd = proc::cmd("docker", ["exec", c]);
            cmd.args(argv);
            cmd
        }
        None => {
            let mut cmd = Command::new(&target.run_prefix[0]);
            cmd.args(&target.run_prefix[1..])
                .arg("--rm")
                .arg(target.image)
                .args(argv);
            cmd
        }
    };
    match target.limit {
        Some(_) => proc::output_within(&mut cmd, target.within(Duration::MAX)),
        None => proc::output(&mut cmd, None),
    }
}

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').context("unclosed ${")?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .with_context(|| format!("`${{{name}}}` was not captured by an earlier check"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn to_json(v: &toml::Value, vars: &BTreeMap<String, String>) -> Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::String(substitute(s, vars)?),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => json!(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => {
            Value::Array(a.iter().map(|x| to_json(x, vars)).collect::<Result<_>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, x)| Ok((k.clone(), to_json(x, vars)?)))
                .collect::<Result<_>>()?,
        ),
    })
}

/// `a.b` looks up nested fields.
fn field<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn http_check(
    h: &HttpCheck,
    target: &Target<'_>,
    vars: &mut BTreeMap<String, String>,
) -> Result<String> {
    let addr = addr(target, h.port)?;
    let path = substitute(&h.path, vars)?;
    let body = h
        .body
        .as_ref()
        .map(|b| to_json(b, vars))
        .transpose()?
        .map(|v| v.to_string());
    let headers = h
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), substitute(v, vars)?)))
        .collect::<Result<Vec<_>>>()?;
    let method = format!("{:?}", h.method).to_uppercase();
    let resp = http::request(
        addr,
        &method,
        &path,
        &headers,
        body.as_deref(),
        target.within(Duration::from_secs(10)),
    )?;
    let shown = proc::tail(&resp.body, 5);
    if resp.status != h.status {
        bail!(
            "{method} {path}: status {}, expected {}\n{shown}",
            resp.status,
            h.status
        );
    }
    if h.json.is_empty() && h.json_fields.is_empty() && h.capture.is_empty() {
        return Ok(format!("{method} {path} -> {}", resp.status));
    }
    let answer: Value = serde_json::from_str(&resp.body)
        .with_context(|| format!("{method} {path}: answer is not JSON:\n{shown}"))?;
    for (k, want) in &h.json {
        let want = to_json(want, vars)?;
        match field(&answer, k) {
            Some(got) if *got == want => {}
            Some(got) => {
                bail!("{method} {path}: field `{k}` is {got}, expected {want}\nanswer: {shown}")
            }
            None => bail!("{method} {path}: field `{k}` missing, expected {want}\nanswer: {shown}"),
        }
    }
    for k in &h.json_fields {
        if field(&answer, k).is_none() {
            bail!("{method} {path}: field `{k}` missing\nanswer: {shown}");
        }
    }
    for (var, k) in &h.capture {
        let v = field(&answer, k)
            .with_context(|| format!("{method} {path}: field `{k}` to capture is missing"))?;
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        vars.insert(var.clone(), text);
    }
    Ok(format!("{method} {path} -> {}", resp.status))
}

/// Speaks MCP over stdio to a fresh container of the server: initialize, tools/list, and an
/// optional tools/call, each answer awaited with a timeout.
fn mcp_check(m: &McpCheck, target: &Target<'_>) -> Result<String> {
    let mut cmd = Command::new(&target.run_prefix[0]);
    cmd.args(&target.run_prefix[1..])
        .args(["--rm", "-i"])
        .arg(target.image);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("start the MCP server container")?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| -> Result<String> {
        let call = |stdin: &mut std::process::ChildStdin,
                    id: u64,
                    method: &str,
                    params: Value|
         -> Result<Value> {
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            writeln!(stdin, "{msg}").context("write to the server")?;
            stdin.flush()?;
            let wait = target.within(Duration::from_secs(30));
            loop {
                let line = rx.recv_timeout(wait).map_err(|_| {
                    anyhow::anyhow!("no answer to `{method}` within {:.1} s", wait.as_secs_f64())
                })?;
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    bail!("the server wrote something that is not JSON-RPC on stdout: {line:?}");
                };
                // Skip notifications and answers to other requests.
                if v.get("id") != Some(&json!(id)) {
                    continue;
                }
                if let Some(err) = v.get("error") {
                    bail!("`{method}` answered an error: {err}");
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
        };
        let init = call(
            &mut stdin,
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "xtask-smoke", "version": "0"}}),
        )?;
        let name = init
            .pointer("/serverInfo/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name != m.server_name {
            bail!("serverInfo.name is {name:?}, expected {:?}", m.server_name);
        }
        writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )?;
        let list = call(&mut stdin, 2, "tools/list", json!({}))?;
        let mut got: Vec<String> = list
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("name")?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        got.sort();
        let mut want = m.tools.clone();
        want.sort();
        if got != want {
            bail!("tools/list gave {got:?}, expected {want:?}");
        }
        let mut summary = format!("{name}: {} tools", got.len());
        if let Some(c) = &m.call {
            let args = to_json(&toml::Value::Table(c.arguments.clone()), &BTreeMap::new())?;
            let res = call(
                &mut stdin,
                3,
                "tools/call",
                json!({"name": c.tool, "arguments": args}),
            )?;
            if res.get("isError") == Some(&json!(true)) {
                bail!("tools/call {} reported an error: {res}", c.tool);
            }
            let text = res
                .pointer("/content/0/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(want) = &c.expect_text {
                if !text.contains(want.as_str()) {
                    bail!(
                        "tools/call {} answered {text:?}, expected it to contain {want:?}",
                        c.tool
                    );
                }
            }
            summary.push_str(&format!(", {} ok", c.tool));
        }
        Ok(summary)
    })();
    // EOF ends a stdio server; make sure the container is gone either way.
    drop(stdin);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    result.and_then(|s| bail!("{s}, but the server did not exit on EOF within 10 s"))
}
