//! The one printer for everything a verb shows, so quiet, JSON and TTY
//! handling live in one place and verbs never `println!`:
//! - **data** (stdout): what was asked for — digests, tables, reports; always;
//! - **status** (stderr): what happened — suppressed by `-q` and `--json`;
//! - **problems** (stderr): errors and warnings about the data — suppressed
//!   by `--json` only, where they are part of the JSON;
//! - **JSON** (stdout) under `--json`, and TTY-aware progress bars.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Per-invocation output settings.
#[derive(Debug, Clone)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
    pub tty: bool,
}

impl Printer {
    pub fn new(json: bool, quiet: bool) -> Self {
        Printer {
            json,
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// A byte progress bar, hidden when stderr is not a TTY or output is quiet/JSON.
    pub fn bytes_bar(&self, total: u64, message: &str) -> ProgressBar {
        if !self.tty || self.quiet || self.json {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:<24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(message.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// A status line on stderr (suppressed by --quiet and --json).
    pub fn status(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.json {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A line of the requested data on stdout.
    pub fn data(&self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
    }

    /// A problem with the data (a failed item, an invalid report) on stderr,
    /// even under --quiet; under --json the JSON says it instead.
    pub fn problem(&self, line: impl AsRef<str>) {
        if !self.json {
            eprintln!("{}", line.as_ref());
        }
    }

    pub fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// `1.5 GB` style sizes (decimal units, like docker).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tables() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000_000), "1.5 GB");
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A     BB\nxxx   y\n");
    }
}
