//! `cargo xtask ci`: the whole check CI runs, in order of cost: format,
//! clippy, the generated code, each library crate alone with its feature
//! sets, the alerting rules (promtool), the supply chain (cargo-deny), a few
//! seconds of each fuzz target, the packaging of the libraries, the release
//! archive with the README's quickstart run from it, the tests.

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
    check_crates_alone()?;
    check_alert_rules()?;
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

/// The library crates, each with the feature sets its users may pick
/// (`None`: the default features; `Some(list)`: default features off and
/// these on). A workspace build unifies features, so a crate that only
/// builds because a neighbour turned a feature on is caught only here.
const LIBRARY_CRATES: &[(&str, &[Option<&str>])] = &[
    ("currents-model", &[None, Some("typed"), Some("synthetic")]),
    ("mixpanel-client", &[Some(""), None]),
    ("currents-mixpanel", &[None]),
    // `nats`: the NATS cohort store, tested against a real nats-server
    // (`.ci/run` installs Debian's).
    ("cohort-import", &[None, Some("nats")]),
    // `fixtures`: Avro files from the field tables, for tests; its S3 tests
    // run against moto's server (`.ci/run` installs it).
    ("currents-archive", &[None, Some("fixtures")]),
];

/// Each library crate built and linted alone as a user gets it (the
/// library, without dev-dependencies), with each of its feature sets, and
/// its tests run with the sets that are not the default.
fn check_crates_alone() -> anyhow::Result<()> {
    for (krate, feature_sets) in LIBRARY_CRATES {
        for features in *feature_sets {
            let feature_args: Vec<&str> = match features {
                None => Vec::new(),
                Some(list) => vec!["--no-default-features", "--features", list],
            };
            let mut clippy = cargo();
            clippy.args(["clippy", "--locked", "--lib", "-p", krate]);
            clippy.args(&feature_args).args(["--", "-D", "warnings"]);
            run_command(&mut clippy)?;
            // The default set's tests run in the workspace test run.
            if features.is_some() {
                let mut clippy = cargo();
                clippy.args(["clippy", "--locked", "--all-targets", "-p", krate]);
                clippy.args(&feature_args).args(["--", "-D", "warnings"]);
                run_command(&mut clippy)?;
                let mut test = cargo();
                test.args(["test", "--locked", "-p", krate])
                    .args(&feature_args);
                run_command(&mut test)?;
            }
        }
    }
    Ok(())
}

/// Generated files must match the reference tables (in the repository, so
/// this always runs).
fn check_generated() -> anyhow::Result<()> {
    codegen::run(codegen::Mode::Check)
}

/// `promtool check rules` and `promtool test rules` on the alerting rules
/// in `deploy/prometheus/` (`docs/operations.md`). Outside CI a machine
/// without promtool skips them with a notice (`.ci/run` installs Debian's
/// `prometheus` package, which has it).
fn check_alert_rules() -> anyhow::Result<()> {
    let has_promtool = std::process::Command::new("promtool")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_promtool && std::env::var_os("CI").is_none() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "xtask: skipping the alerting rules' checks: promtool is not installed (apt-get install prometheus)"
            );
        }
        return Ok(());
    }
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        run_command(
            std::process::Command::new("promtool")
                .args(args)
                .current_dir(project_root()),
        )?;
    }
    Ok(())
}
