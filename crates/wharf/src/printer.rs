//! The one way out for output: data to stdout (what a script may pipe), messages and
//! progress to stderr. Colour only on a terminal and never with NO_COLOR; progress
//! spinners only on a terminal and never with `--quiet`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{Global, OutputFormat};

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: OutputFormat,
    quiet: bool,
    color: bool,
    stderr_tty: bool,
}

/// Colours used for states and outcomes.
#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Good,
    Bad,
    Warn,
}

impl Printer {
    pub fn new(global: &Global) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            format: global.output,
            quiet: global.quiet,
            color: stderr_tty && !no_color,
            stderr_tty,
        }
    }

    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Data for stdout.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// Raw data for stdout, as it streams in.
    pub fn stream(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    pub fn json_data<T: Serialize>(&self, value: &T) {
        self.data(&serde_json::to_string_pretty(value).expect("output serializes"));
    }

    /// A message for stderr, unless `--quiet`.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// Errors are printed even with `--quiet`.
    pub fn error(&self, text: &str) {
        let text = text
            .strip_prefix("error:")
            .map(|rest| format!("{}{rest}", self.paint("error:", Tone::Bad)))
            .unwrap_or_else(|| text.to_owned());
        eprintln!("{text}");
    }

    /// Colours `text` for stderr when colour is on.
    pub fn paint(&self, text: &str, tone: Tone) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Bad => "31",
            Tone::Warn => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Progress of a long operation: a spinner on a terminal, plain lines otherwise.
    pub fn progress(&self) -> Progress {
        let bar = (self.stderr_tty && !self.quiet).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            quiet: self.quiet,
        }
    }
}

/// See [`Printer::progress`].
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A line that stays.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if !self.quiet => eprintln!("{text}"),
            None => {}
        }
    }

    /// What is happening now (the spinner's text; nothing without a terminal).
    pub fn status(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
