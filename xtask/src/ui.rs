//! What the tool prints while it works: one line per task, live bars on a terminal, plain lines
//! when output is a pipe or a CI log.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
}

pub struct Task {
    name: String,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Progress {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Progress {
            multi: tty.then(MultiProgress::new),
        }
    }

    /// A line that stays, printed above any live bars.
    pub fn line(&self, text: &str) {
        let text = &crate::redact::text(text);
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    pub fn task(&self, name: &str, first: &str) -> Task {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:20} {elapsed:>4} {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(name.to_string());
            bar.set_message(first.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("{name}: {first}");
        }
        Task {
            name: name.to_string(),
            bar,
        }
    }
}

impl Task {
    /// Live status; in plain mode intermediate states are not printed (a CI log wants the
    /// outcome, not every step).
    pub fn set(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_string());
        }
    }

    pub fn finish(&self, text: &str) {
        let text = &crate::redact::text(text);
        match &self.bar {
            Some(bar) => bar.finish_with_message(text.to_string()),
            None => eprintln!("{}: {text}", self.name),
        }
    }
}
