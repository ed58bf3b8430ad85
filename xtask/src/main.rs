//! Project automation, run as `cargo xtask <task>` (see `.cargo/config.toml`).
//!
//! Everything CI does is here rather than in shell scripts, so that a developer
//! runs exactly what CI runs: `cargo xtask ci`.

mod bench;
mod bench_backfill;
mod bench_import;
mod ci;
mod codegen;
mod dist;
mod fuzz;
mod mutants;
mod quickstart;
mod release;
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci                 fmt check, clippy -D warnings, codegen --check, cargo deny,
                     fuzz smoke, packaging, dist + quickstart, tests
  codegen [--check]  regenerate code from the Currents reference tables
  bench              the mapping benchmark (criterion)
  bench import [--events N]... [--concurrency C] [--gzip on|off|both]
                     end-to-end import into a local /import sink on loopback
  bench ingest [--concurrency C] [--seconds S] [--rate EVENTS_PER_SEC]
                     `serve` under HTTP load, delivering to a loopback sink
  bench cost [--spool sqlite|nats] [--floor] [--set NAME=VALUE]...
                     `serve`'s CPU at 30,000 events/s (--floor: and the least
                     a receiver that fsyncs each body pays for that load)
  bench cohorts [--pages N] [--concurrency C] [--ten-million] [...]
                     cohort webhook intake, Braze writer, latency, snapshot diff
  bench transform [--size-mb MB] [--threads N,N...] [--runs R] [--output null|file]
                     the release `transform` on a large NDJSON file, 1 thread and more
  fuzz [--seconds N] [TARGET]...
                     the cargo-fuzz targets in fuzz/, N seconds each (default 60)
  mutants [MODULE]... [-- ARGS]
                     cargo-mutants on the core modules (all by default)
  tidy               repository hygiene checks (also run as a test)
  dist [--check]     the release archive of the binary for the host target, in
                     target/dist/ (--check: then the README's quickstart on it)
  release <version> [--dry-run] [--no-verify]
                     bump the version, date the changelog, check the packages,
                     commit (signed off) and tag v<version> (docs/releasing.md)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci"] => ci::run(),
        ["codegen"] => codegen::run(codegen::Mode::Write),
        ["codegen", "--check"] => codegen::run(codegen::Mode::Check),
        ["bench", rest @ ..] => bench::run(rest),
        ["fuzz", rest @ ..] => fuzz::run(rest),
        ["mutants", rest @ ..] => mutants::run(rest),
        ["tidy"] => tidy::run(),
        ["dist", rest @ ..] => dist::run(rest),
        ["release", rest @ ..] => release::run(rest),
        _ => {
            #[allow(clippy::print_stderr)]
            {
                eprint!("{USAGE}");
            }
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("xtask: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, found from this crate's manifest directory.
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The `cargo` that invoked us, so toolchain overrides carry through.
pub(crate) fn cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(project_root());
    command
}

/// A new, empty directory under the system's temporary directory, unique
/// to this process and call; the caller removes it.
pub(crate) fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xtask-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs a command, failing with its rendering when it does not succeed.
pub(crate) fn run_command(command: &mut std::process::Command) -> anyhow::Result<()> {
    let rendered = format!("{command:?}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("xtask: running {rendered}");
    }
    let status = command.status()?;
    anyhow::ensure!(status.success(), "{rendered} failed with {status}");
    Ok(())
}
