//! `cargo xtask target-exec` (hidden): drive a `Target` by hand, to see what a host answers,
//! and for the end-to-end tests of the SSH path. Output of the commands run is passed through
//! as bytes.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{Ssh, Target};
use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// A host from hosts/ (default: this machine)
    #[arg(long, value_name = "HOST", conflicts_with = "ssh")]
    host: Option<String>,
    /// An ssh destination instead of a host from hosts/
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    ssh: Option<String>,
    #[command(subcommand)]
    op: Op,
}

#[derive(clap::Subcommand)]
enum Op {
    /// Run ARGV and exit with its exit code
    Run {
        /// Run it this many times over the one connection
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Feed this process's stdin to the command
        #[arg(long)]
        stdin: bool,
        /// Fail on a non-zero exit and print only the trimmed stdout
        #[arg(long)]
        check: bool,
        /// Print the control socket's path and whether it exists to stderr
        #[arg(long)]
        show_control: bool,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Write stdin to PATH
    Write {
        path: String,
        /// Octal mode
        #[arg(long, default_value = "644")]
        mode: String,
    },
    /// Print PATH; exit 3 when there is no such file
    Read { path: String },
    /// Ship a local image to the host
    PipeImage { image: String },
    /// Print a local address that reaches PORT on the host; keep it until stdin closes
    Forward { port: u16 },
}

pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    let target = match (&args.host, &args.ssh) {
        (Some(name), _) => {
            let model = model::load(root).map_err(|e| anyhow::anyhow!("{e}"))?;
            let host = model
                .hosts
                .iter()
                .find(|h| &h.name == name)
                .with_context(|| format!("no host `{name}` in {}", root.join("hosts").display()))?;
            Target::for_host(&host.spec)?
        }
        (None, Some(spec)) => Target::Ssh(Ssh::new(spec, spec)?),
        (None, None) => Target::Local,
    };
    let code = op(&target, &args.op)?;
    target.close()?;
    Ok(code)
}

fn op(target: &Target, op: &Op) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match op {
        Op::Run {
            repeat,
            stdin,
            check,
            show_control,
            argv,
        } => {
            let input = if *stdin { Some(read_stdin()?) } else { None };
            let mut code = 0;
            for _ in 0..*repeat {
                if *check {
                    writeln!(stdout, "{}", target.run_ok(argv)?)?;
                    continue;
                }
                let out = match &input {
                    Some(data) => target.run_input(argv, data)?,
                    None => target.run(argv)?,
                };
                stdout.write_all(&out.stdout)?;
                std::io::stderr().write_all(&out.stderr)?;
                code = out.status.code().unwrap_or(1);
            }
            if *show_control {
                match target.control_path() {
                    Some(p) => eprintln!("control: {} exists={}", p.display(), p.exists()),
                    None => eprintln!("control: none"),
                }
            }
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Op::Write { path, mode } => {
            let Ok(mode) = u32::from_str_radix(mode, 8) else {
                bail!("mode `{mode}` is not octal");
            };
            target.write_file(path, &read_stdin()?, mode)?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Read { path } => match target.read_file(path)? {
            Some(data) => {
                stdout.write_all(&data)?;
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no such file: {path}");
                Ok(ExitCode::from(3))
            }
        },
        Op::PipeImage { image } => {
            target.pipe_image(image)?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Forward { port } => {
            let addr = target.forward(*port)?;
            writeln!(stdout, "{addr}")?;
            stdout.flush()?;
            // Held open until the caller closes our stdin.
            read_stdin()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("read stdin")?;
    Ok(data)
}
