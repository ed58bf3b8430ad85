//! `check-config`: validates the service's configuration and prints it,
//! secrets redacted, each value with where it came from; or fails with the
//! first mistake, naming the setting.

use std::io::{self, Write};
use std::process::ExitCode;

use crate::server_args::ServerArgs;

pub(crate) fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = args.load_config()?;
    let mut stderr = io::stderr().lock();
    for warning in config.warnings() {
        writeln!(stderr, "braze-mixpanel-bridge: warning: {warning}")?;
    }
    let mut stdout = io::stdout().lock();
    stdout.write_all(config.to_redacted_toml().as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
