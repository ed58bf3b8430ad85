//! The flags shared by the commands that run or check the bridge service
//! (`serve` and `check-config`). Each overrides its key in the
//! config file and its `BRIDGE_*` variable; `docs/configuration.md` lists
//! every key.

use std::path::PathBuf;

use anyhow::Context;
use bridge_server::config::{Config, Env, Flags};

/// Where the service's configuration comes from.
#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    /// TOML configuration file (else $BRIDGE_CONFIG; every key has a default
    /// or comes from the environment).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on, such as 0.0.0.0:8080 [env: BRIDGE_LISTEN] [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// Directory of the spool, dead letters and dry-run output
    /// [env: BRIDGE_DATA_DIR] [default: ./bridge-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Write mapped events to NDJSON files in the data directory instead of
    /// sending them to Mixpanel [env: BRIDGE_DRY_RUN].
    #[arg(long)]
    dry_run: bool,

    /// Log format: text or json [env: BRIDGE_LOG_FORMAT] [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

impl ServerArgs {
    /// The validated configuration: the file, then the environment, then these flags.
    pub(crate) fn load_config(&self) -> anyhow::Result<Config> {
        let flags = Flags {
            config: self.config.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            dry_run: self.dry_run.then_some(true),
            log_format: self.log_format.clone(),
            ..Flags::default()
        };
        Config::load(&flags, &Env::from_process()).context("invalid configuration")
    }
}
