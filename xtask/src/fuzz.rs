//! `cargo xtask fuzz [--seconds N] [TARGET]...`: the cargo-fuzz targets in
//! `fuzz/` (the Currents batch and event parsers, gzip intake, the NDJSON
//! reader), each for N seconds (default 60). CI runs a short smoke of each.
//!
//! cargo-fuzz builds with the sanitizer flags of a nightly compiler; the
//! project's stable toolchain takes them with `RUSTC_BOOTSTRAP=1`, set
//! here for that build only. Crashes and the corpus stay in `fuzz/`.

use crate::{cargo, project_root, run_command};

/// Every target, in `fuzz/Cargo.toml`.
pub(crate) const TARGETS: [&str; 5] = [
    "currents_batch",
    "currents_event",
    "gzip_intake",
    "ndjson_reader",
    "import_answer",
];

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [TARGET]...";

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut seconds: u64 = 60;
    let mut targets: Vec<&str> = Vec::new();
    let mut args = args.iter().copied();
    while let Some(arg) = args.next() {
        match arg {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--seconds needs a number\n{USAGE}"))?;
            }
            target if TARGETS.contains(&target) => targets.push(target),
            other => anyhow::bail!("unknown target or flag {other:?}\n{USAGE}"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    for target in targets {
        run_target(target, seconds)?;
    }
    Ok(())
}

/// Fuzzes one target for `seconds`, from its corpus in `fuzz/corpus/`
/// (kept out of git), seeded with the project's Currents fixtures for the
/// Currents targets and with `fuzz/seeds/<target>/` where it exists.
pub(crate) fn run_target(target: &str, seconds: u64) -> anyhow::Result<()> {
    let root = project_root();
    let fuzz_dir = root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut command = cargo();
    command
        .current_dir(&fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", target])
        .arg(&corpus);
    if target.starts_with("currents_") {
        command.arg(root.join("tests").join("data").join("currents"));
    }
    let seeds = fuzz_dir.join("seeds").join(target);
    if seeds.is_dir() {
        command.arg(seeds);
    }
    command
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048");
    run_command(&mut command)
}

/// Whether cargo-fuzz is installed.
pub(crate) fn is_installed() -> bool {
    cargo()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
