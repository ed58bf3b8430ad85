//! `braze-mixpanel-bridge`: the command line. It parses arguments and wires
//! the library crates together; the work itself lives in them.
//!
//! Exit codes: 0 success (for `transform`, events may still have been
//! skipped or invalid; the summary says how many), 1 failure (unreadable
//! input, input that is not JSON, output that cannot be written, refused
//! credentials), 2 usage error, 3 `import` finished but some records were
//! not imported.

mod backfill_cmd;
mod check_config_cmd;
mod cohorts_cmd;
mod dlq_cmd;
mod dlq_cohorts;
#[cfg(test)]
mod dlq_tests;
mod generate_cmd;
mod import_cmd;
mod mixpanel_args;
mod progress;
mod serve_cmd;
mod server_args;
mod transform_cmd;

use std::process::ExitCode;

/// Per-event allocations on many threads are cheaper in jemalloc than in
/// glibc's malloc (see docs/benchmarks.md); MSVC builds keep the system's.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Bridges Braze Currents and Mixpanel.
#[derive(Parser)]
#[command(
    name = "braze-mixpanel-bridge",
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 some records not imported."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Map Currents events (a file or stdin) to Mixpanel events (NDJSON on stdout).
    Transform(transform_cmd::TransformArgs),
    /// Import Mixpanel events (NDJSON or JSON arrays) into Mixpanel's /import.
    Import(import_cmd::ImportArgs),
    /// Send Braze Currents storage archives (Avro, S3/GCS/Azure/a directory) to Mixpanel, resumably (docs/backfill.md).
    Backfill(backfill_cmd::BackfillArgs),
    /// Run the service: receive Braze Currents, spool them, deliver them to Mixpanel.
    Serve(server_args::ServerArgs),
    /// Check the service configuration and print it, secrets redacted; --connect also checks NATS (docs/configuration.md).
    CheckConfig(check_config_cmd::CheckConfigArgs),
    /// Inspect the dead letters (SQLite or NATS): list, show, replay into delivery, purge (also while serve runs).
    Dlq(dlq_cmd::DlqArgs),
    /// Mixpanel cohorts into Braze: list, sync (one pull), status.
    Cohorts(cohorts_cmd::CohortsArgs),
}

fn main() -> ExitCode {
    // `generate` is parsed apart, so that the command line it documents
    // (`Cli`) does not hold it: clap_complete would offer a hidden
    // subcommand all the same.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "generate")
    {
        let args = generate_cmd::GenerateCli::parse_from(std::env::args_os().skip(1));
        return finish(generate_cmd::run(args, Cli::command()));
    }
    finish(run(Cli::parse()))
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "braze-mixpanel-bridge: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Transform(args) => {
            init_logging("warn", false);
            transform_cmd::run(args)
        }
        Command::Import(args) => {
            init_logging("warn", false);
            import_cmd::run(args)
        }
        Command::Backfill(args) => {
            init_logging("warn", false);
            backfill_cmd::run_command(args)
        }
        Command::Serve(args) => serve_cmd::run(args),
        Command::CheckConfig(args) => {
            init_logging("warn", false);
            check_config_cmd::run(args)
        }
        Command::Dlq(args) => {
            init_logging("warn", false);
            dlq_cmd::run(args)
        }
        Command::Cohorts(args) => {
            init_logging("warn", false);
            cohorts_cmd::run(args)
        }
    }
}

/// Logs go to stderr, as text or JSON lines; `RUST_LOG` overrides the
/// default level.
pub(crate) fn init_logging(default_level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A closed stdout (`transform | head`) is a normal way to stop.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io_error| io_error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
