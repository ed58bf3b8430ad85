//! `cargo xtask bench`: runs the benchmarks whose figures `docs/benchmarks.md` records.
//!
//! Extra arguments go to criterion, e.g. `cargo xtask bench -- --quick`.
//! `cargo xtask bench import [...]` runs the end-to-end `/import` benchmark
//! instead (see [`crate::bench_import`]), and `cargo xtask bench ingest [...]`
//! the `serve` load test (see [`ingest`]).

use crate::{cargo, run_command};

#[path = "bench_ingest.rs"]
mod ingest;

pub(crate) fn run(extra_args: &[&str]) -> anyhow::Result<()> {
    if let ["import", import_args @ ..] = extra_args {
        return crate::bench_import::run(import_args);
    }
    if let ["ingest", ingest_args @ ..] = extra_args {
        return ingest::run(ingest_args);
    }
    let mut command = cargo();
    command.args(["bench", "-p", "bridge-server", "--bench", "mapping"]);
    let criterion_args: Vec<&str> = extra_args
        .iter()
        .copied()
        .skip_while(|arg| *arg == "--")
        .collect();
    if !criterion_args.is_empty() {
        command.arg("--").args(criterion_args);
    }
    run_command(&mut command)
}
