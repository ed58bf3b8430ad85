//! `cargo xtask mutants [MODULE]... [-- CARGO_MUTANTS_ARGS]`: mutation
//! testing of the core modules with cargo-mutants, one `--file` filter per
//! module, then a score per module (`docs/testing.md` records them).
//!
//! Not part of `cargo xtask ci`: it rebuilds the mutated crate once per
//! mutant, which takes hours for all of them on a small machine. A missed
//! mutant fails the task unless it is listed in [`KNOWN_EQUIVALENT`], a
//! mutant no test can tell from the original.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{cargo, project_root};

/// The core modules: a short name for the command line, and the file.
const MODULES: [(&str, &str); 7] = [
    ("retry", "crates/mixpanel-client/src/retry.rs"),
    ("import", "crates/mixpanel-client/src/import.rs"),
    (
        "mapping-identity",
        "crates/currents-mixpanel/src/mapping/identity.rs",
    ),
    ("cohort-identity", "crates/cohort-import/src/identity.rs"),
    ("ingest-auth", "crates/bridge-server/src/ingest/auth.rs"),
    ("ingest", "crates/bridge-server/src/ingest/mod.rs"),
    ("delivery", "crates/bridge-server/src/delivery/mod.rs"),
];

/// Mutants that behave exactly as the original, as cargo-mutants names
/// them, less line and column (`docs/testing.md` says why for each).
const KNOWN_EQUIVALENT: &[&str] = &[
    // Alphanumeric bytes and `-` are disjoint: `|` and `^` agree.
    "crates/currents-mixpanel/src/mapping/identity.rs: replace | with ^ in insert_id",
    // Which bodies are parsed whole and which event by event decides
    // memory only: both paths give the same events and verdicts.
    "crates/bridge-server/src/delivery/mod.rs: replace * with +",
    "crates/bridge-server/src/delivery/mod.rs: replace * with /",
    "crates/bridge-server/src/delivery/mod.rs: replace <= with > in parse_events",
];

const USAGE: &str = "\
usage: cargo xtask mutants [MODULE]... [-- CARGO_MUTANTS_ARGS]
modules (default: all): retry, import, mapping-identity, cohort-identity,
  ingest-auth, ingest, delivery; or a path from the workspace root";

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let (selected, extra_args) = match args.iter().position(|arg| *arg == "--") {
        Some(split) => (&args[..split], &args[split + 1..]),
        None => (args, &[][..]),
    };
    let files = select(selected)?;
    ensure_installed()?;
    let output = target_dir().join("mutants");
    let mut command = cargo();
    command.arg("mutants").arg("--output").arg(&output);
    for file in &files {
        command.args(["--file", file]);
    }
    command.args(extra_args);
    let rendered = format!("{command:?}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("xtask: running {rendered}");
    }
    let status = command.status()?;
    // 0: every mutant caught; 2: some missed; 3: some timed out (a hang
    // counts as caught). Anything else (a failing baseline, a usage error)
    // left no results to read.
    anyhow::ensure!(
        matches!(status.code(), Some(0 | 2 | 3)),
        "{rendered} failed with {status}"
    );
    let results = Results::read(&output.join("mutants.out"))?;
    #[allow(clippy::print_stdout)]
    {
        print!("{}", results.summary(&files));
    }
    let unexpected: Vec<&String> = results
        .missed
        .iter()
        .filter(|name| !is_known_equivalent(name))
        .collect();
    anyhow::ensure!(
        unexpected.is_empty(),
        "{} missed mutants are not known equivalents: add a test that catches each, or, if none can, list it in xtask/src/mutants.rs and docs/testing.md",
        unexpected.len()
    );
    Ok(())
}

/// The files for the modules named on the command line (all by default).
fn select(names: &[&str]) -> anyhow::Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(MODULES.iter().map(|(_, file)| *file).collect());
    }
    names
        .iter()
        .map(|name| {
            MODULES
                .iter()
                .find(|(short, file)| short == name || file == name)
                .map(|(_, file)| *file)
                .ok_or_else(|| anyhow::anyhow!("unknown module {name:?}\n{USAGE}"))
        })
        .collect()
}

fn ensure_installed() -> anyhow::Result<()> {
    let installed = cargo()
        .args(["mutants", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    anyhow::ensure!(
        installed,
        "cargo-mutants is not installed: install it with `cargo install --locked cargo-mutants`"
    );
    Ok(())
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or `target/` at the root.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// The mutants of one run by outcome, as cargo-mutants names them:
/// `<file>:<line>:<column>: <mutation>`.
#[derive(Debug, Default)]
struct Results {
    caught: Vec<String>,
    timeout: Vec<String>,
    missed: Vec<String>,
    unviable: Vec<String>,
}

/// One module's counts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    caught: usize,
    timeout: usize,
    /// Missed, known equivalents left out.
    missed: usize,
    /// Missed and known to be equivalent.
    equivalent: usize,
    unviable: usize,
}

impl Results {
    /// Reads cargo-mutants' `caught.txt`, `timeout.txt`, `missed.txt` and
    /// `unviable.txt`, one mutant a line.
    fn read(dir: &Path) -> anyhow::Result<Results> {
        let lines = |name: &str| -> anyhow::Result<Vec<String>> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
            Ok(text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect())
        };
        Ok(Results {
            caught: lines("caught.txt")?,
            timeout: lines("timeout.txt")?,
            missed: lines("missed.txt")?,
            unviable: lines("unviable.txt")?,
        })
    }

    fn counts<'a>(&'a self) -> BTreeMap<&'a str, Counts> {
        let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
        let file_of = |name: &'a String| name.split(':').next().unwrap_or(name);
        for name in &self.caught {
            counts.entry(file_of(name)).or_default().caught += 1;
        }
        for name in &self.timeout {
            counts.entry(file_of(name)).or_default().timeout += 1;
        }
        for name in &self.missed {
            let counts = counts.entry(file_of(name)).or_default();
            if is_known_equivalent(name) {
                counts.equivalent += 1;
            } else {
                counts.missed += 1;
            }
        }
        for name in &self.unviable {
            counts.entry(file_of(name)).or_default().unviable += 1;
        }
        counts
    }

    /// A table of the files' scores, then the missed mutants. The score
    /// is the share of viable mutants detected (caught, or hanging past the
    /// timeout), known equivalents left out; `raw` counts them as missed.
    fn summary(&self, files: &[&str]) -> String {
        let counts = self.counts();
        let mut text = format!(
            "\n{:<46} {:>6} {:>7} {:>6} {:>5} {:>8} {:>7} {:>7}\n",
            "module", "caught", "timeout", "missed", "equiv", "unviable", "score", "raw"
        );
        let percent = |part: usize, whole: usize| {
            if whole == 0 {
                "-".to_owned()
            } else {
                format!("{:.1} %", 100.0 * part as f64 / whole as f64)
            }
        };
        for file in files {
            let Some(counts) = counts.get(file) else {
                text.push_str(&format!("{file:<46} no mutants\n"));
                continue;
            };
            let detected = counts.caught + counts.timeout;
            text.push_str(&format!(
                "{file:<46} {:>6} {:>7} {:>6} {:>5} {:>8} {:>7} {:>7}\n",
                counts.caught,
                counts.timeout,
                counts.missed,
                counts.equivalent,
                counts.unviable,
                percent(detected, detected + counts.missed),
                percent(detected, detected + counts.missed + counts.equivalent),
            ));
        }
        for name in &self.missed {
            let known = if is_known_equivalent(name) {
                " (known equivalent)"
            } else {
                ""
            };
            text.push_str(&format!("missed: {name}{known}\n"));
        }
        text
    }
}

fn is_known_equivalent(name: &str) -> bool {
    KNOWN_EQUIVALENT.contains(&without_position(name).as_str())
}

/// `<file>: <mutation>` for cargo-mutants' `<file>:<line>:<column>:
/// <mutation>`, so that known equivalents survive edits above them.
fn without_position(name: &str) -> String {
    let mut parts = name.splitn(4, ':');
    let is_number = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(file), Some(line), Some(column), Some(mutation))
            if is_number(line) && is_number(column) =>
        {
            format!("{file}:{mutation}")
        }
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_chosen_by_short_name_or_path() {
        assert_eq!(select(&[]).unwrap().len(), MODULES.len());
        assert_eq!(
            select(&["retry", "crates/cohort-import/src/identity.rs"]).unwrap(),
            [
                "crates/mixpanel-client/src/retry.rs",
                "crates/cohort-import/src/identity.rs"
            ]
        );
        let error = select(&["retyr"]).unwrap_err().to_string();
        assert!(error.contains("unknown module \"retyr\""), "{error}");
    }

    #[test]
    fn every_module_exists() {
        for (_, file) in MODULES {
            assert!(project_root().join(file).is_file(), "{file}");
        }
    }

    #[test]
    fn the_summary_scores_each_file_over_its_viable_mutants() {
        let equivalent = KNOWN_EQUIVALENT[0].to_owned();
        let file = equivalent.split(':').next().unwrap().to_owned();
        assert_eq!(
            without_position("a.rs:3:9: delete ! in f"),
            "a.rs: delete ! in f"
        );
        assert_eq!(
            without_position("a.rs: delete ! in f"),
            "a.rs: delete ! in f"
        );
        let results = Results {
            caught: vec![
                "a.rs: replace + with - in f".to_owned(),
                "a.rs: replace f -> bool with true".to_owned(),
                "a.rs: delete ! in f".to_owned(),
                "b.rs: replace g -> u8 with 0".to_owned(),
                format!("{file}: replace && with || in insert_id"),
            ],
            timeout: vec!["b.rs: replace < with <= in g".to_owned()],
            missed: vec![
                "a.rs:3:9: replace | with ^ in f".to_owned(),
                equivalent.replacen(": ", ":41:52: ", 1),
            ],
            unviable: vec!["a.rs: replace f -> T with Default::default()".to_owned()],
        };
        let counts = results.counts();
        assert_eq!(
            counts["a.rs"],
            Counts {
                caught: 3,
                timeout: 0,
                missed: 1,
                equivalent: 0,
                unviable: 1
            }
        );
        assert_eq!(counts[file.as_str()].equivalent, 1);
        assert_eq!(counts[file.as_str()].missed, 0);
        let summary = results.summary(&["a.rs", "b.rs", "c.rs", &file]);
        let line = |name: &str| {
            summary
                .lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_else(|| panic!("{name}: {summary}"))
                .to_owned()
        };
        assert!(line("a.rs").ends_with(" 75.0 %  75.0 %"), "{summary}");
        assert!(line("b.rs").ends_with("100.0 % 100.0 %"), "{summary}");
        assert!(line("c.rs").ends_with("no mutants"), "{summary}");
        assert!(line(&file).ends_with("100.0 %  50.0 %"), "{summary}");
        assert!(
            summary.contains("missed: a.rs:3:9: replace | with ^ in f\n"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!(
                "missed: {} (known equivalent)\n",
                equivalent.replacen(": ", ":41:52: ", 1)
            )),
            "{summary}"
        );
    }
}
