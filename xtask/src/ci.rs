//! `cargo xtask ci`: the whole check CI runs, in order of cost.

use crate::{cargo, codegen, run_command};

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
    run_command(cargo().args(["test", "--workspace", "--locked"]))?;
    Ok(())
}

/// Generated files must match the reference tables. Outside CI a checkout
/// without the tables skips this with a notice; in CI it is required.
fn check_generated() -> anyhow::Result<()> {
    if !codegen::reference_dir().exists() && std::env::var_os("CI").is_none() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "xtask: skipping codegen --check: no reference tables at {}",
                codegen::reference_dir().display()
            );
        }
        return Ok(());
    }
    codegen::run(codegen::Mode::Check)
}
