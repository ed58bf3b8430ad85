//! `cargo xtask ci`: the whole check CI runs, in order of cost: format,
//! clippy, the generated code, the supply chain (cargo-deny), a few seconds
//! of each fuzz target, the packaging of the libraries, the release archive
//! with the README's quickstart run from it, the tests.

use crate::{cargo, codegen, project_root, run_command};

pub(crate) fn run() -> anyhow::Result<()> {
    run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_command(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    check_generated()?;
    check_supply_chain()?;
    fuzz_smoke()?;
    // What `cargo xtask release` checks, so that a release never finds
    // the packaging broken: each library packaged and built from its
    // package.
    crate::release::check_packaging(&project_root(), true)?;
    // The release archive, for real (a release build), and what a user
    // does first with it.
    let archive = crate::dist::build()?;
    crate::quickstart::run(&archive)?;
    // Last, so that the test runner's summary closes the output.
    run_command(cargo().args(["test", "--workspace", "--locked"]))?;
    Ok(())
}

/// A few seconds of each fuzz target (`cargo xtask fuzz` runs them
/// longer). Outside CI a machine without cargo-fuzz skips it with a notice
/// (`.ci/run` installs it).
fn fuzz_smoke() -> anyhow::Result<()> {
    if !crate::fuzz::is_installed() && std::env::var_os("CI").is_none() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "xtask: skipping the fuzz smoke run: cargo-fuzz is not installed (cargo install --locked cargo-fuzz)"
            );
        }
        return Ok(());
    }
    for target in crate::fuzz::TARGETS {
        crate::fuzz::run_target(target, FUZZ_SMOKE_SECS)?;
    }
    Ok(())
}

/// Seconds of each fuzz target in CI.
const FUZZ_SMOKE_SECS: u64 = 5;

/// `cargo deny check bans licenses sources` (`deny.toml`): one version of
/// each crate in the binary, permissive licences, crates.io only. Outside
/// CI a machine without cargo-deny skips it with a notice (`.ci/run`
/// installs it); advisories need the network and are run by hand.
fn check_supply_chain() -> anyhow::Result<()> {
    let has_cargo_deny = cargo()
        .args(["deny", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_cargo_deny && std::env::var_os("CI").is_none() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "xtask: skipping cargo deny: not installed (cargo install --locked cargo-deny)"
            );
        }
        return Ok(());
    }
    run_command(cargo().args(["deny", "check", "bans", "licenses", "sources"]))
}

/// Generated files must match the reference tables (in the repository, so
/// this always runs).
fn check_generated() -> anyhow::Result<()> {
    codegen::run(codegen::Mode::Check)
}
