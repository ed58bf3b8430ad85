//! The spool's settings alone ([`spool_only`]): where the dead letters are
//! kept (the data dir, `spool.backend`, `spool.max_bytes` and `[nats]`),
//! read from the same sources and with the same checks as [`Config::load`]
//! but without the rest, so that `dlq` and `cohorts status` need no ingest token
//! and no Mixpanel credentials.
//!
//! Only `BRIDGE_DATA_DIR`, `BRIDGE_SPOOL`, `BRIDGE_SPOOL_MAX_BYTES` and
//! `BRIDGE_NATS_*` are read from the environment; the file, if one is
//! named, must still be valid (a misspelt key is an error, as for `serve`).
//!
//! [`Config::load`]: super::Config::load

use std::path::PathBuf;

use super::keys;
use super::raw::RawConfig;
use super::validate::Context;
use super::{ConfigError, ConfigFile, Env, Flags, Provenance, SpoolBackend, toml_error};

/// Where the spool is: what administering its dead letters needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOnly {
    /// The data directory (the SQLite spool and cohort store are in it).
    pub data_dir: PathBuf,
    /// SQLite in the data directory, or NATS JetStream with its options.
    pub backend: SpoolBackend,
}

/// The data dir and the spool's backend, from `--config` (else
/// `BRIDGE_CONFIG`), the variables above and `flags.data_dir`, in rising
/// precedence, validated as [`Config::load`](super::Config::load) validates
/// them; nothing else is read or checked. `[nats]` secrets named by
/// `*_file` keys are read (they are needed to connect).
pub fn spool_only(flags: &Flags, env: &Env) -> Result<SpoolOnly, ConfigError> {
    let path = match &flags.config {
        Some(path) => Some(path.clone()),
        None => env.get(keys::CONFIG_VAR)?.map(PathBuf::from),
    };
    let file = path.map(|path| ConfigFile::read(&path)).transpose()?;
    spool_only_from_sources(file.as_ref(), env, flags)
}

/// [`spool_only`] from a file already read (or none).
pub(super) fn spool_only_from_sources(
    file: Option<&ConfigFile>,
    env: &Env,
    flags: &Flags,
) -> Result<SpoolOnly, ConfigError> {
    let mut raw = match file {
        Some(file) => RawConfig::from_toml(&file.text).map_err(|error| toml_error(file, &error))?,
        None => RawConfig::default(),
    };
    raw.overlay_spool_env(env)?;
    raw.overlay_flags(flags);
    let mut cx = Context {
        file,
        provenance: Provenance::default(),
        warnings: Vec::new(),
    };
    let data_dir = match raw.data_dir {
        Some(data_dir) if data_dir.value.as_os_str().is_empty() => {
            return Err(cx.invalid(
                keys::DATA_DIR.key,
                Some(&data_dir.origin),
                "a directory",
                "an empty path".to_owned(),
            ));
        }
        Some(data_dir) => data_dir.value,
        None => PathBuf::from(keys::DEFAULT_DATA_DIR),
    };
    let max_bytes = cx.int(&keys::SPOOL_MAX_BYTES, raw.spool.max_bytes)?;
    let backend = super::nats_validate::validate_backend(
        &mut cx,
        raw.spool.backend,
        raw.nats,
        max_bytes.value,
    )?;
    Ok(SpoolOnly { data_dir, backend })
}
