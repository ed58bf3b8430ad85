//! `serve`: runs the bridge service until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use bridge_server::config::LogFormat;

use crate::server_args::ServerArgs;

pub(crate) fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = args.load_config()?;
    crate::init_logging("info", config.log_format == LogFormat::Json);
    for warning in config.warnings() {
        tracing::warn!(warning = %warning, "Configuration warning.");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(bridge_server::serve::serve(config, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::warn!(error = %error, "Cannot listen for SIGTERM; only Ctrl-C stops the bridge.");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
