//! `cargo xtask status` (no host) / `ls`: the deployment matrix, printed from the descriptors.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::model::{self, Model, ServiceKind};

#[derive(clap::Args)]
pub struct Args {
    /// A host: show each of its services' state, health, revision and uptime
    host: Option<String>,
    /// Print JSON for machines instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    component: String,
    /// "service" or "lib".
    kind: String,
    runs_where: Vec<String>,
    model: String,
    data: String,
    backup: String,
    status: String,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    if let Some(host) = &args.host {
        return crate::deploy::status(root, host);
    }
    let Some(model) = model::load_reported(root) else {
        return Ok(ExitCode::FAILURE);
    };
    let rows = rows(&model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn rows(model: &Model) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in &model.services {
        let spec = &s.spec;
        let model_text = spec.docs.model.clone().unwrap_or_else(|| {
            match spec.kind {
                ServiceKind::Container => "container",
                ServiceKind::McpStdio => "MCP server over stdio",
                ServiceKind::Workflow => "workflows",
                ServiceKind::ScheduledJob => "scheduled job",
                ServiceKind::HostManaged => "host-managed",
            }
            .to_string()
        });
        let backup = match &spec.backup {
            None => "-".to_string(),
            Some(b) => {
                let mut text = b.kind.as_str().to_string();
                if let Some(s) = &b.schedule {
                    text.push_str(&format!(" `{s}`"));
                }
                if let Some(d) = b.retention_days {
                    text.push_str(&format!(", keep {d} d"));
                }
                text
            }
        };
        rows.push(Row {
            component: s.name.clone(),
            kind: "service".into(),
            runs_where: model
                .hosts_of(&s.name)
                .iter()
                .map(|h| h.name.clone())
                .collect(),
            model: model_text,
            data: spec.docs.data.clone().unwrap_or_else(|| "-".into()),
            backup,
            status: spec.status.as_str().into(),
        });
    }
    for l in &model.libs {
        rows.push(Row {
            component: l.name.clone(),
            kind: "lib".into(),
            runs_where: model
                .hosts_of_lib(&l.name)
                .iter()
                .map(|h| h.name.clone())
                .collect(),
            model: l
                .spec
                .docs
                .model
                .clone()
                .unwrap_or_else(|| "editable install in .venv".into()),
            data: l.spec.docs.data.clone().unwrap_or_else(|| "-".into()),
            backup: "git".into(),
            status: l.spec.status.as_str().into(),
        });
    }
    rows
}

fn table(rows: &[Row]) -> String {
    let header = [
        "component",
        "runs where",
        "model",
        "data",
        "backup",
        "status",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let wher = if r.runs_where.is_empty() {
                "-".to_string()
            } else {
                r.runs_where.join(", ")
            };
            [
                r.component.clone(),
                wher,
                r.model.clone(),
                r.data.clone(),
                r.backup.clone(),
                r.status.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header.map(String::from));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}
