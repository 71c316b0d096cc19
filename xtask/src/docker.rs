//! The Docker CLI, driven with argv and `--format` so answers are parsed, not scraped.

use anyhow::Result;

use crate::proc;

/// The id of a local image, or `None` when there is no such image.
pub fn image_id(reference: &str) -> Result<Option<String>> {
    let out = proc::output(
        &mut proc::cmd(
            "docker",
            ["image", "inspect", "--format", "{{.Id}}", reference],
        ),
        None,
    )?;
    if out.status.success() {
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Ok((!id.is_empty()).then_some(id));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such image") || err.contains("No such object") {
        Ok(None)
    } else {
        anyhow::bail!("docker image inspect {reference}: {}", proc::tail(&err, 3))
    }
}

/// One label of an image.
pub fn image_label(image: &str, label: &str) -> Result<Option<String>> {
    let format = format!("{{{{index .Config.Labels {label:?}}}}}");
    let out = proc::stdout(&mut proc::cmd(
        "docker",
        ["image", "inspect", "--format", &format, image],
    ))?;
    Ok((!out.is_empty() && out != "<no value>").then_some(out))
}

/// `(image id, label value, tags)` of every image carrying `label`.
pub fn images_with_label(label: &str) -> Result<Vec<(String, String, Vec<String>)>> {
    let ids = proc::stdout(&mut proc::cmd(
        "docker",
        [
            "image",
            "ls",
            "--no-trunc",
            "--quiet",
            "--filter",
            &format!("label={label}"),
        ],
    ))?;
    let mut ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let format = format!("{{{{.Id}}}} {{{{index .Config.Labels {label:?}}}}} {{{{range .RepoTags}}}}{{{{.}}}},{{{{end}}}}");
    let mut cmd = proc::cmd("docker", ["image", "inspect", "--format", &format]);
    cmd.args(&ids);
    let out = proc::stdout(&mut cmd)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let (id, value) = (f.next()?, f.next()?);
            let tags = f
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect();
            Some((id.to_string(), value.to_string(), tags))
        })
        .collect())
}

pub fn tag(image: &str, reference: &str) -> Result<()> {
    proc::run(&mut proc::cmd("docker", ["tag", image, reference]), None)?;
    Ok(())
}
