//! `cargo xtask bench`: runs the benchmarks whose figures `docs/benchmarks.md` records.
//!
//! Extra arguments go to criterion, e.g. `cargo xtask bench -- --quick`.
//! `cargo xtask bench import [...]` runs the end-to-end `/import` benchmark
//! instead (see [`crate::bench_import`]), `cargo xtask bench ingest [...]`
//! the `serve` load test (see [`ingest`]), `cargo xtask bench cost [...]`
//! its CPU cost at one Mixpanel project's full rate (with `--floor`, first
//! the least a receiver pays for that load: see [`floor`]; `cargo xtask
//! bench floor-server` is that receiver), `cargo xtask bench cohorts
//! [...]` the cohort import from webhook to Braze (see [`cohorts`]), and
//! `cargo xtask bench backfill [...]` Avro archives into a loopback `/import`
//! (see [`crate::bench_backfill`]), `cargo xtask bench memory [...]` `serve`'s peak memory under the worst
//! load its default limits let through (see [`memory`]), and `cargo xtask
//! bench transform [...]` the `transform` command on one thread and on
//! several (see [`transform`]).

use crate::{cargo, run_command};

#[path = "bench_cohorts.rs"]
mod cohorts;
#[path = "bench_floor.rs"]
mod floor;
#[path = "bench_ingest.rs"]
mod ingest;
#[path = "bench_memory.rs"]
mod memory;
#[path = "bench_transform.rs"]
mod transform;

pub(crate) fn run(extra_args: &[&str]) -> anyhow::Result<()> {
    if let ["import", import_args @ ..] = extra_args {
        return crate::bench_import::run(import_args);
    }
    if let ["ingest", ingest_args @ ..] = extra_args {
        return ingest::run(ingest_args);
    }
    if let ["nats", nats_args @ ..] = extra_args {
        return ingest::run_nats_comparison(nats_args);
    }
    if let ["cost", cost_args @ ..] = extra_args {
        return ingest::run_cost(cost_args);
    }
    if let ["floor-server"] = extra_args {
        return floor::serve();
    }
    if let ["cohorts", cohorts_args @ ..] = extra_args {
        return cohorts::run(cohorts_args);
    }
    if let ["backfill", backfill_args @ ..] = extra_args {
        return crate::bench_backfill::run(backfill_args);
    }
    if let ["memory", memory_args @ ..] = extra_args {
        return memory::run(memory_args);
    }
    if let ["transform", transform_args @ ..] = extra_args {
        return transform::run(transform_args);
    }
    let mut command = cargo();
    command.args(["bench", "-p", "currents-mixpanel", "--bench", "mapping"]);
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
