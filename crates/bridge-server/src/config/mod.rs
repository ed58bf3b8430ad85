//! The bridge service's configuration, read in two stages.
//!
//! 1. `raw`: the TOML file (`--config` or `BRIDGE_CONFIG`), then the
//!    environment (`BRIDGE_*`, `MIXPANEL_*` for the default project and
//!    `BRAZE_*` for the Braze connection of the cohort import), then the
//!    command-line [`Flags`], each layer replacing the keys it sets.
//!    Every key is optional there and remembers where it was set.
//! 2. `validate` (and `projects` for the Mixpanel projects): the raw keys
//!    become a [`Config`] with units in names (`max_body_bytes`,
//!    `request_timeout` as a `Duration`), a `SocketAddr`, paths, [`Secret`]s
//!    read from the environment or from files, Mixpanel [`Credentials`] and
//!    a [`TypeFilter`], the cohort import's [`CohortsConfig`] (in
//!    `cohorts_validate`); or a [`ConfigError`] naming the setting, where it
//!    was set and what was expected.
//!
//! [`spool_only()`] reads the data dir and the spool's backend alone, for the
//! `dlq` command, which needs no token or credentials.
//!
//! `keys` is the one table of key names, variables, bounds and defaults.
//! The environment is passed in as an [`Env`], never read behind the
//! caller's back, so tests bring their own. `docs/configuration.md` lists
//! every key with its variable and default; [`Config::to_redacted_toml`] is
//! what `braze-mixpanel-bridge check-config` prints.

mod archive_validate;
mod cohorts;
mod cohorts_validate;
mod keys;
mod nats_validate;
mod projects;
mod raw;
mod render;
mod spool_only;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mixpanel_client::{BatchLimits, Credentials, Region, RetryParams, Secret};

use currents_mixpanel::{MappingConfig, TypeFilter};

pub use cohorts::{BrazeConfig, CohortWebhookConfig, CohortWriter, CohortsConfig, PullSchedule};
pub use spool_only::{SpoolOnly, spool_only};

/// The validated configuration of the bridge service.
///
/// `Debug` shows no secret: they are [`Secret`]s.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the ingest server listens.
    pub listen: SocketAddr,
    /// Where `/status`, `/metrics`, `/readyz` and `/healthz` are served.
    pub ops: OpsListener,
    /// TLS on the ingest listener (`[tls]`), when the bridge terminates it
    /// itself rather than behind a proxy.
    pub tls: Option<TlsConfig>,
    /// PEM certificates trusted as roots for outbound HTTPS (Mixpanel,
    /// Braze) besides the platform's store and the bundled public roots
    /// (`extra_ca_file`): for a TLS-inspecting proxy.
    pub extra_ca: Option<ExtraCa>,
    /// Where the spool, dead letters and dry-run output live.
    pub data_dir: PathBuf,
    /// Whether mapped events go to NDJSON files in the data dir
    /// ([`Config::dry_run_path`]) instead of Mixpanel.
    pub dry_run: bool,
    /// How logs are written.
    pub log_format: LogFormat,
    /// The `POST /currents` endpoint.
    pub ingest: IngestConfig,
    /// The durable queue between ingest and delivery.
    pub spool: SpoolConfig,
    /// Delivery to Mixpanel.
    pub delivery: DeliveryConfig,
    /// Where every accepted batch is also archived, as received (`[archive]`);
    /// `None`: no archive.
    pub archive: Option<ArchiveConfig>,
    /// Which event types are exported (`[mapping]`).
    pub type_filter: TypeFilter,
    /// The project that takes every batch no other project claims (`[mixpanel]`).
    pub default_project: ProjectConfig,
    /// The routed projects (`[[projects]]`), in file order.
    pub projects: Vec<ProjectConfig>,
    /// Mixpanel cohorts into Braze (`[cohorts]`, `[braze]`).
    pub cohorts: CohortsConfig,
    /// Where each setting came from, for [`Config::to_redacted_toml`].
    provenance: Provenance,
    warnings: Vec<String>,
}

/// The certificate the ingest listener serves (PEM files, read again
/// when they change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (`tls.cert_file`).
    pub cert_file: PathBuf,
    /// Its private key (`tls.key_file`).
    pub key_file: PathBuf,
}

/// Extra root certificates and the file they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct ExtraCa {
    /// The file.
    pub path: PathBuf,
    /// Its PEM text.
    pub pem: Vec<u8>,
}

impl fmt::Debug for ExtraCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtraCa")
            .field("path", &self.path)
            .field("pem_bytes", &self.pem.len())
            .finish()
    }
}

/// Where the operations endpoints are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsListener {
    /// A listener of their own (`ops_listen`, loopback by default), so
    /// that the ingest listener, which faces the internet, serves ingest
    /// alone.
    Address(SocketAddr),
    /// The ingest listener (`ops_on_ingest_listener = true`).
    IngestListener,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The body cap ingest applies ([`Config::ingest_body_cap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyCap {
    /// The largest body accepted, after gzip inflation.
    pub bytes: usize,
    /// `ingest.max_body_bytes` was set above what the spool can store, and
    /// `bytes` is the lower figure.
    pub lowered_from_setting: bool,
}

/// The `POST /currents` endpoint.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Which bearer tokens Braze may present.
    pub auth: IngestAuth,
    /// The largest request body accepted, counted after gzip inflation.
    /// On NATS, `serve` lowers it to what the servers' `max_payload` holds
    /// ([`Config::ingest_body_cap`]).
    pub max_body_bytes: usize,
    /// How long one request may take, body and spooling included.
    pub request_timeout: Duration,
    /// The most events one batch may hold; more get 413 so that Braze
    /// splits the batch (Braze sends up to 100).
    pub max_events_per_batch: usize,
    /// The bodies all requests in flight may hold at once (Currents
    /// batches and cohort pages); a request that does not fit waits.
    pub max_inflight_body_bytes: usize,
    /// Time allowed for a request head, and for an idle keep-alive
    /// connection to send its next request.
    pub header_read_timeout: Duration,
    /// Connections open at once on the listener; more are closed at once.
    pub max_connections: usize,
    /// How long shutdown waits for open connections before cutting them.
    pub shutdown_grace: Duration,
}

/// Which requests the ingest endpoint accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestAuth {
    /// Requests with `Authorization: Bearer <token>` for any of these tokens.
    /// Never empty; several at once let a rotation lose nothing.
    Tokens(Vec<Secret>),
    /// Every request: only for local tests, and only on a loopback address;
    /// or, with [`Flags::cohorts_only`] and no token, for commands that
    /// serve no ingest.
    Unauthenticated,
}

/// Where batches wait, and how much may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The stored bytes at which ingest answers 503 until delivery frees
    /// space (for NATS, the batch stream's size limit).
    pub max_bytes: u64,
    /// The embedded SQLite spool, or NATS JetStream shared by replicas.
    pub backend: SpoolBackend,
}

/// The spool's storage (`spool.backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolBackend {
    /// SQLite in the data directory: one process, no other service.
    Sqlite,
    /// NATS JetStream: any number of replicas share the batches, the dead
    /// letters and the cohort state.
    Nats(Box<crate::nats::NatsOptions>),
}

/// Delivery to Mixpanel.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Batches delivered at once.
    pub workers: usize,
    /// Concurrent `/import` requests per project.
    pub concurrency: usize,
    /// How long a worker that leased less than a full request's worth of
    /// batches waits for more before it sends what it has.
    pub linger: Duration,
    /// How long a worker holds a batch before the spool hands it out again.
    /// At least the worst case of one request (checked).
    pub lease: Duration,
    /// The timeout of one `/import` request attempt.
    pub request_timeout: Duration,
    /// Retries of one request: backoff and count.
    pub retry: RetryParams,
    /// Events and bytes per `/import` request.
    pub batch_limits: BatchLimits,
    /// Deliveries tried after which a batch's undelivered events are
    /// dead-lettered with the last error.
    pub max_attempts: u32,
    /// The age (since Braze sent the batch) after which a batch's
    /// undelivered events are dead-lettered with the last error.
    pub max_age: Duration,
}

/// `serve`'s own archive of the batches it accepts, for a later `backfill`
/// (`[archive]`). Delivery writes each batch there before it sends its
/// events, so the store's availability is part of the delivery path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// A directory, or a `file://`, `s3://`, `gs://` or `az://` URL (what
    /// `currents_archive::store::ArchiveStore::open` takes), without user
    /// info or query string: credentials come from the environment, as
    /// each store's own tools read them.
    pub url: String,
}

/// One Mixpanel project: where and as whom to send, and which batches go there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectConfig {
    /// `default` for the `[mixpanel]` project, else the `[[projects]]` name.
    pub name: String,
    /// `?workspace=` values routed here.
    pub workspaces: Vec<String>,
    /// `properties.app_group_id` values routed here.
    pub app_group_ids: Vec<String>,
    /// How to authenticate: a service account, the API secret or the
    /// project token, in that order of preference. `None` only in dry-run.
    pub credentials: Option<Credentials>,
    /// The project token, sent as `token` in every event when set.
    pub project_token: Option<Secret>,
    /// The project's data residency region.
    pub region: Region,
    /// A base URL replacing the region's host (a proxy or a test server).
    pub api_url: Option<String>,
}

/// The command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config`: the TOML file (else `BRIDGE_CONFIG`, else none).
    pub config: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: Option<bool>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// For the `cohorts` commands, which do not serve ingest: no Currents
    /// token is required. Without one, [`IngestConfig::auth`] is then
    /// [`IngestAuth::Unauthenticated`], whatever the listen address; such a
    /// configuration must not serve `POST /currents`. Everything else is
    /// validated as usual.
    pub cohorts_only: bool,
}

/// The environment variables the configuration reads. Empty values count
/// as unset. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    not_unicode: BTreeSet<String>,
}

/// A config file's path and text.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// Its TOML text.
    pub text: String,
}

/// A configuration mistake. The message names the setting (the variable,
/// the flag, or the file, line and key) and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of
    /// the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The column, from 1.
        column: usize,
        /// The TOML reader's message.
        message: String,
    },
    /// A value is not what the setting takes.
    #[error("{setting}: expected {expected}, found {found}")]
    Invalid {
        /// The variable, the flag, or `file:line: key`.
        setting: String,
        /// What it takes.
        expected: String,
        /// What it was given (never a secret).
        found: String,
    },
    /// A file named by a setting (a secret or the tokens) cannot be read.
    #[error("{setting}: cannot read {}", path.display())]
    ReadSettingFile {
        /// The setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Two settings that exclude each other are both set.
    #[error("{first} and {second} are both set: set only one")]
    Conflict {
        /// One setting.
        first: String,
        /// The other.
        second: String,
    },
    /// Ingest has no token and is not explicitly unauthenticated.
    #[error(
        "no Currents token: set BRIDGE_CURRENTS_TOKENS, ingest.tokens or ingest.tokens_file (ingest.allow_unauthenticated = true is for local tests only)"
    )]
    NoTokens,
    /// A project has no usable Mixpanel credentials.
    #[error("project {project:?} has no Mixpanel credentials: set {hint}")]
    NoCredentials {
        /// The project.
        project: String,
        /// The settings to set.
        hint: String,
    },
    /// A project has part of a set of credentials.
    #[error("project {project:?}: {present} is set but {missing} is not")]
    IncompleteCredentials {
        /// The project.
        project: String,
        /// The setting given.
        present: String,
        /// The setting it needs.
        missing: String,
    },
    /// Two projects have the same name (or names that give the same
    /// `BRIDGE_PROJECT_<NAME>_*` variables).
    #[error("{setting}: project name {name:?} is already used by another project")]
    DuplicateProject {
        /// Where the second name was set.
        setting: String,
        /// The name.
        name: String,
    },
    /// A workspace or app group id is routed to two projects.
    #[error("{setting}: {kind} {value:?} already routes to project {other:?}")]
    DuplicateRoute {
        /// Where the second route was set.
        setting: String,
        /// `workspace` or `app_group_id`.
        kind: &'static str,
        /// The workspace or app group id.
        value: String,
        /// The project it already routes to.
        other: String,
    },
    /// A setting's value needs another setting that is not set (the partner
    /// writer without its keys).
    #[error("{setting} = {value} needs {missing}")]
    Needs {
        /// The setting, as the variable or `file:line: key`.
        setting: String,
        /// Its value (never a secret).
        value: String,
        /// The setting to set, and where.
        missing: String,
    },
    /// The cohort import is on but has no Braze REST API key.
    #[error(
        "cohort import is on ({setting}) but has no Braze REST API key: set BRAZE_REST_API_KEY, braze.rest_api_key or braze.rest_api_key_file"
    )]
    NoBrazeKey {
        /// The setting that turned the import on.
        setting: String,
    },
    /// A `BRIDGE_PROJECT_*` variable names no `[[projects]]` entry or key.
    #[error(
        "{variable}: names no [[projects]] entry of the config file and key (BRIDGE_PROJECT_<NAME>_<KEY>)"
    )]
    UnknownProjectVariable {
        /// The variable.
        variable: String,
    },
}

/// Where each setting came from: notes for the redacted rendering. Holds
/// no value, so no secret.
#[derive(Debug, Clone, Default)]
struct Provenance {
    file: Option<PathBuf>,
    /// Dotted key (`ingest.max_body_bytes`, `projects.brand-a.api_secret`)
    /// to a note (`BRIDGE_MAX_BODY_BYTES`, `bridge.toml:12`). Absent: default.
    notes: BTreeMap<String, String>,
    /// One note per accepted ingest token, in order.
    token_notes: Vec<String>,
    tokens_file: Option<PathBuf>,
    include_types: Option<Vec<String>>,
    exclude_types: Vec<String>,
    /// One note per accepted webhook credential, in order.
    credential_notes: Vec<String>,
    credentials_file: Option<PathBuf>,
}

impl Config {
    /// Reads the config file named by `flags.config` or `BRIDGE_CONFIG` (if
    /// any), lays `env` and `flags` over it and validates the result.
    pub fn load(flags: &Flags, env: &Env) -> Result<Config, ConfigError> {
        let path = match &flags.config {
            Some(path) => Some(path.clone()),
            None => env.get(keys::CONFIG_VAR)?.map(PathBuf::from),
        };
        let file = path.map(|path| ConfigFile::read(&path)).transpose()?;
        Config::from_sources(file.as_ref(), env, flags)
    }

    /// Validates a configuration from a file already read (or none), the
    /// environment and the flags, in rising precedence.
    pub fn from_sources(
        file: Option<&ConfigFile>,
        env: &Env,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let mut raw = match file {
            Some(file) => {
                raw::RawConfig::from_toml(&file.text).map_err(|error| toml_error(file, &error))?
            }
            None => raw::RawConfig::default(),
        };
        let warnings = raw.overlay_env(env)?;
        raw.overlay_flags(flags);
        validate::validate(raw, file, warnings, flags.cohorts_only)
    }

    /// The project for a batch: the one whose `workspaces` hold `workspace`,
    /// else the one whose `app_group_ids` hold `app_group_id`, else the
    /// default project.
    pub fn route(&self, workspace: Option<&str>, app_group_id: Option<&str>) -> &ProjectConfig {
        let by_workspace = workspace.and_then(|workspace| {
            self.projects
                .iter()
                .find(|project| project.workspaces.iter().any(|w| w == workspace))
        });
        let by_app_group = || {
            app_group_id.and_then(|id| {
                self.projects
                    .iter()
                    .find(|project| project.app_group_ids.iter().any(|a| a == id))
            })
        };
        by_workspace
            .or_else(by_app_group)
            .unwrap_or(&self.default_project)
    }

    /// Every project, the default one first.
    pub fn all_projects(&self) -> impl Iterator<Item = &ProjectConfig> {
        std::iter::once(&self.default_project).chain(&self.projects)
    }

    /// The mapping settings for events delivered to `project`.
    pub fn mapping_config(&self, project: &ProjectConfig) -> MappingConfig {
        MappingConfig {
            project_token: project
                .project_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            type_filter: self.type_filter.clone(),
        }
    }

    /// Where dry-run delivery writes `project`'s mapped events:
    /// `<data_dir>/dry-run/<project>.ndjson`.
    pub fn dry_run_path(&self, project: &ProjectConfig) -> PathBuf {
        self.data_dir
            .join("dry-run")
            .join(format!("{}.ndjson", project.name))
    }

    /// Whether `ingest.max_body_bytes` was set (file, environment), not
    /// left at its default.
    pub fn max_body_bytes_is_set(&self) -> bool {
        self.provenance.notes.contains_key(keys::MAX_BODY_BYTES.key)
    }

    /// The body cap ingest applies, given the largest body the spool can
    /// store (`None`: no limit of its own, SQLite): `ingest.max_body_bytes`
    /// when it fits; else, when it was left at its default, the spool's
    /// room (the cap follows the NATS servers' `max_payload`); else the
    /// spool's room too, and a warning that the setting cannot be honoured.
    pub fn ingest_body_cap(&self, spool_room: Option<usize>) -> BodyCap {
        let configured = self.ingest.max_body_bytes;
        match spool_room {
            Some(room) if room < configured => BodyCap {
                bytes: room,
                lowered_from_setting: self.max_body_bytes_is_set(),
            },
            _ => BodyCap {
                bytes: configured,
                lowered_from_setting: false,
            },
        }
    }

    /// The config file read, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.provenance.file.as_deref()
    }

    /// Things that are valid but probably not meant: variables that name
    /// no setting, type patterns that match no known type, credentials
    /// that are set but not used, the deprecated API secret, unauthenticated
    /// endpoints, a Braze key sent over plain http.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The effective configuration as TOML, each value with where it came
    /// from, every secret shown as `[redacted]` with its source.
    pub fn to_redacted_toml(&self) -> String {
        render::render(self)
    }
}

impl IngestAuth {
    /// The tokens ingest checks requests against (none: every request
    /// passes).
    pub fn bearer_tokens(&self) -> crate::ingest::auth::BearerTokens {
        use crate::ingest::auth::BearerTokens;
        match self {
            IngestAuth::Tokens(tokens) => BearerTokens::new(tokens.iter().map(Secret::expose)),
            IngestAuth::Unauthenticated => BearerTokens::new([]),
        }
    }
}

impl ProjectConfig {
    /// The base URL of `/import`: `api_url`, else the region's host.
    pub fn base_url(&self) -> &str {
        self.api_url
            .as_deref()
            .unwrap_or(self.region.ingestion_url())
    }
}

impl LogFormat {
    /// `text` or `json`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(text: &str) -> Result<LogFormat, UnknownLogFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(text.to_owned())),
        }
    }
}

/// A log format that is not `text` or `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected text or json")]
pub struct UnknownLogFormat(String);

impl Env {
    /// The `BRIDGE_*`, `MIXPANEL_*` and `BRAZE_*` variables of this process.
    pub fn from_process() -> Env {
        let mut env = Env::default();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let ours = name.starts_with("BRIDGE_")
                || name.starts_with("MIXPANEL_")
                || name.starts_with("BRAZE_");
            if !ours {
                continue;
            }
            match value.into_string() {
                Ok(value) => {
                    env.vars.insert(name.to_owned(), value);
                }
                Err(_) => {
                    env.not_unicode.insert(name.to_owned());
                }
            }
        }
        env
    }

    /// The value of a variable; empty values count as unset.
    fn get(&self, name: &str) -> Result<Option<&str>, ConfigError> {
        if self.not_unicode.contains(name) {
            return Err(ConfigError::Invalid {
                setting: name.to_owned(),
                expected: "UTF-8 text".to_owned(),
                found: "other bytes".to_owned(),
            });
        }
        Ok(self
            .vars
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty()))
    }

    /// The names of the variables that are set (and not empty).
    fn names(&self) -> impl Iterator<Item = &str> {
        let set = self
            .vars
            .iter()
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(name, _)| name.as_str());
        set.chain(self.not_unicode.iter().map(String::as_str))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(vars: I) -> Env {
        Env {
            vars: vars
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
            not_unicode: BTreeSet::new(),
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.vars.keys().chain(&self.not_unicode))
            .finish()
    }
}

impl ConfigFile {
    /// Reads a config file.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            text,
        })
    }

    /// `path:line` of a byte offset of the text.
    fn location(&self, offset: usize) -> String {
        let (line, _) = line_column(&self.text, offset);
        format!("{}:{line}", self.path.display())
    }
}

/// A TOML error as `path:line:column: message`, without the source excerpt
/// (which could show a secret).
fn toml_error(file: &ConfigFile, error: &toml::de::Error) -> ConfigError {
    let (line, column) = line_column(&file.text, error.span().map_or(0, |span| span.start));
    ConfigError::Toml {
        path: file.path.clone(),
        line,
        column,
        message: error.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |idx| idx + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
