//! The raw stage of the configuration: every key optional, as the TOML
//! file, the environment and the command line give it, each value with the
//! place it came from.
//!
//! The file is read with `deny_unknown_fields`, so a misspelt key is an
//! error. The environment and the flags are then laid over it, key by key:
//! a later layer replaces a value whatever form it had (a secret set in the
//! environment replaces the `*_file` of the same secret in the file). Nothing
//! is checked here beyond what it takes to read a value; `validate` does the
//! rest.

use std::fmt;
use std::path::PathBuf;

use mixpanel_client::Secret;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};

use super::keys::{self, ConnectionVars, IntKey};
use super::{ConfigError, Env, Flags};

/// Where a raw value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The config file, at this byte offset of its text.
    File { offset: usize },
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(&'static str),
}

/// A raw value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Sourced<T> {
    pub(crate) value: T,
    pub(crate) origin: Origin,
}

/// The whole configuration before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) listen: Option<Sourced<String>>,
    pub(crate) ops_listen: Option<Sourced<String>>,
    pub(crate) ops_on_ingest_listener: Option<Sourced<bool>>,
    pub(crate) extra_ca_file: Option<Sourced<PathBuf>>,
    pub(crate) data_dir: Option<Sourced<PathBuf>>,
    pub(crate) dry_run: Option<Sourced<bool>>,
    pub(crate) log_format: Option<Sourced<String>>,
    #[serde(default)]
    pub(crate) tls: RawTls,
    #[serde(default)]
    pub(crate) ingest: RawIngest,
    #[serde(default)]
    pub(crate) spool: RawSpool,
    #[serde(default)]
    pub(crate) nats: RawNats,
    #[serde(default)]
    pub(crate) delivery: RawDelivery,
    #[serde(default)]
    pub(crate) mapping: RawMapping,
    #[serde(default)]
    pub(crate) archive: RawArchive,
    /// The default project.
    #[serde(default)]
    pub(crate) mixpanel: RawProject,
    #[serde(default)]
    pub(crate) projects: Vec<RawProject>,
    #[serde(default)]
    pub(crate) cohorts: RawCohorts,
    #[serde(default)]
    pub(crate) braze: RawBraze,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert_file: Option<Sourced<PathBuf>>,
    pub(crate) key_file: Option<Sourced<PathBuf>>,
}

/// `[ingest]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngest {
    pub(crate) tokens: Option<Sourced<SecretList>>,
    pub(crate) tokens_file: Option<Sourced<PathBuf>>,
    pub(crate) allow_unauthenticated: Option<Sourced<bool>>,
    pub(crate) max_body_bytes: Option<Sourced<u64>>,
    pub(crate) request_timeout_secs: Option<Sourced<u64>>,
    pub(crate) max_events_per_batch: Option<Sourced<u64>>,
    pub(crate) max_inflight_body_bytes: Option<Sourced<u64>>,
    pub(crate) header_read_timeout_secs: Option<Sourced<u64>>,
    pub(crate) max_connections: Option<Sourced<u64>>,
    pub(crate) shutdown_grace_secs: Option<Sourced<u64>>,
}

/// `[spool]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpool {
    pub(crate) backend: Option<Sourced<String>>,
    pub(crate) max_bytes: Option<Sourced<u64>>,
}

/// `[nats]`: the NATS JetStream backend's connection and objects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNats {
    pub(crate) servers: Option<Sourced<Vec<String>>>,
    pub(crate) user: Option<Sourced<String>>,
    pub(crate) password: Option<Sourced<SecretText>>,
    pub(crate) password_file: Option<Sourced<PathBuf>>,
    pub(crate) token: Option<Sourced<SecretText>>,
    pub(crate) token_file: Option<Sourced<PathBuf>>,
    pub(crate) nkey_seed: Option<Sourced<SecretText>>,
    pub(crate) nkey_seed_file: Option<Sourced<PathBuf>>,
    pub(crate) creds_file: Option<Sourced<PathBuf>>,
    pub(crate) tls_ca_file: Option<Sourced<PathBuf>>,
    pub(crate) tls_required: Option<Sourced<bool>>,
    pub(crate) stream: Option<Sourced<String>>,
    pub(crate) subject_prefix: Option<Sourced<String>>,
    pub(crate) consumer: Option<Sourced<String>>,
    pub(crate) dead_letter_stream: Option<Sourced<String>>,
    pub(crate) kv_bucket_prefix: Option<Sourced<String>>,
    pub(crate) replicas: Option<Sourced<u64>>,
    pub(crate) duplicate_window_secs: Option<Sourced<u64>>,
    pub(crate) publish_timeout_ms: Option<Sourced<u64>>,
    pub(crate) connect_timeout_secs: Option<Sourced<u64>>,
}

impl RawNats {
    /// `BRIDGE_NATS_*`.
    fn overlay_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        set_list(&mut self.servers, env, keys::NATS_SERVERS.env)?;
        set_text(&mut self.user, env, keys::NATS_USER.env)?;
        set_secret(
            &mut self.password,
            &mut self.password_file,
            env,
            keys::NATS_PASSWORD.env,
            keys::NATS_PASSWORD_FILE.env,
        )?;
        set_secret(
            &mut self.token,
            &mut self.token_file,
            env,
            keys::NATS_TOKEN.env,
            keys::NATS_TOKEN_FILE.env,
        )?;
        set_secret(
            &mut self.nkey_seed,
            &mut self.nkey_seed_file,
            env,
            keys::NATS_NKEY_SEED.env,
            keys::NATS_NKEY_SEED_FILE.env,
        )?;
        set_path(&mut self.creds_file, env, keys::NATS_CREDS_FILE.env)?;
        set_path(&mut self.tls_ca_file, env, keys::NATS_TLS_CA_FILE.env)?;
        set_bool(&mut self.tls_required, env, keys::NATS_TLS_REQUIRED.env)?;
        set_text(&mut self.stream, env, keys::NATS_STREAM.env)?;
        set_text(&mut self.subject_prefix, env, keys::NATS_SUBJECT_PREFIX.env)?;
        set_text(&mut self.consumer, env, keys::NATS_CONSUMER.env)?;
        set_text(
            &mut self.dead_letter_stream,
            env,
            keys::NATS_DEAD_LETTER_STREAM.env,
        )?;
        set_text(
            &mut self.kv_bucket_prefix,
            env,
            keys::NATS_KV_BUCKET_PREFIX.env,
        )?;
        set_int(&mut self.replicas, env, &keys::NATS_REPLICAS)?;
        set_int(
            &mut self.duplicate_window_secs,
            env,
            &keys::NATS_DUPLICATE_WINDOW_SECS,
        )?;
        set_int(
            &mut self.publish_timeout_ms,
            env,
            &keys::NATS_PUBLISH_TIMEOUT_MS,
        )?;
        set_int(
            &mut self.connect_timeout_secs,
            env,
            &keys::NATS_CONNECT_TIMEOUT_SECS,
        )?;
        Ok(())
    }

    /// Whether any `[nats]` key is set (a NATS setting with the SQLite spool
    /// is probably a mistake).
    pub(crate) fn any_set(&self) -> Option<&Origin> {
        [
            self.servers.as_ref().map(|value| &value.origin),
            self.user.as_ref().map(|value| &value.origin),
            self.password.as_ref().map(|value| &value.origin),
            self.password_file.as_ref().map(|value| &value.origin),
            self.token.as_ref().map(|value| &value.origin),
            self.token_file.as_ref().map(|value| &value.origin),
            self.nkey_seed.as_ref().map(|value| &value.origin),
            self.nkey_seed_file.as_ref().map(|value| &value.origin),
            self.creds_file.as_ref().map(|value| &value.origin),
            self.tls_ca_file.as_ref().map(|value| &value.origin),
            self.stream.as_ref().map(|value| &value.origin),
            self.subject_prefix.as_ref().map(|value| &value.origin),
            self.consumer.as_ref().map(|value| &value.origin),
            self.dead_letter_stream.as_ref().map(|value| &value.origin),
            self.kv_bucket_prefix.as_ref().map(|value| &value.origin),
            self.replicas.as_ref().map(|value| &value.origin),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

/// `[delivery]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    pub(crate) workers: Option<Sourced<u64>>,
    pub(crate) concurrency: Option<Sourced<u64>>,
    pub(crate) linger_ms: Option<Sourced<u64>>,
    pub(crate) lease_secs: Option<Sourced<u64>>,
    pub(crate) request_timeout_secs: Option<Sourced<u64>>,
    pub(crate) max_retries: Option<Sourced<u64>>,
    pub(crate) retry_initial_backoff_secs: Option<Sourced<u64>>,
    pub(crate) retry_max_backoff_secs: Option<Sourced<u64>>,
    pub(crate) max_batch_events: Option<Sourced<u64>>,
    pub(crate) max_batch_bytes: Option<Sourced<u64>>,
    pub(crate) max_attempts: Option<Sourced<u64>>,
    pub(crate) max_age_secs: Option<Sourced<u64>>,
}

/// `[mapping]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMapping {
    pub(crate) include_types: Option<Sourced<Vec<String>>>,
    pub(crate) exclude_types: Option<Sourced<Vec<String>>>,
}

/// `[archive]`: `serve`'s archive of the batches it accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawArchive {
    pub(crate) url: Option<Sourced<String>>,
}

/// `[mixpanel]` (the default project, which takes no name or routes) or
/// one `[[projects]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProject {
    pub(crate) name: Option<Sourced<String>>,
    pub(crate) workspaces: Option<Sourced<Vec<String>>>,
    pub(crate) app_group_ids: Option<Sourced<Vec<String>>>,
    pub(crate) project_id: Option<Sourced<ProjectIdText>>,
    pub(crate) service_account_username: Option<Sourced<String>>,
    pub(crate) service_account_secret: Option<Sourced<SecretText>>,
    pub(crate) service_account_secret_file: Option<Sourced<PathBuf>>,
    pub(crate) api_secret: Option<Sourced<SecretText>>,
    pub(crate) api_secret_file: Option<Sourced<PathBuf>>,
    pub(crate) project_token: Option<Sourced<SecretText>>,
    pub(crate) project_token_file: Option<Sourced<PathBuf>>,
    pub(crate) region: Option<Sourced<String>>,
    pub(crate) api_url: Option<Sourced<String>>,
}

/// `[cohorts]`: the cohort import (Mixpanel cohorts into Braze).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCohorts {
    pub(crate) webhook_path: Option<Sourced<String>>,
    pub(crate) webhook_credentials: Option<Sourced<SecretList>>,
    pub(crate) webhook_credentials_file: Option<Sourced<PathBuf>>,
    pub(crate) webhook_allow_unauthenticated: Option<Sourced<bool>>,
    pub(crate) max_body_bytes: Option<Sourced<u64>>,
    pub(crate) max_members_per_page: Option<Sourced<u64>>,
    pub(crate) identity: Option<Sourced<String>>,
    pub(crate) writer: Option<Sourced<String>>,
    pub(crate) attribute: Option<Sourced<String>>,
    pub(crate) pull_interval_secs: Option<Sourced<u64>>,
    /// Cohort ids: an array of integers in the file.
    pub(crate) pull_cohorts: Option<Sourced<Vec<u64>>>,
}

/// `[braze]`: the Braze REST connection of the cohort import.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBraze {
    pub(crate) rest_api_key: Option<Sourced<SecretText>>,
    pub(crate) rest_api_key_file: Option<Sourced<PathBuf>>,
    pub(crate) instance: Option<Sourced<String>>,
    pub(crate) api_url: Option<Sourced<String>>,
    pub(crate) partner_name: Option<Sourced<String>>,
    pub(crate) partner_api_key: Option<Sourced<SecretText>>,
    pub(crate) partner_api_key_file: Option<Sourced<PathBuf>>,
    pub(crate) data_import_key: Option<Sourced<SecretText>>,
    pub(crate) data_import_key_file: Option<Sourced<PathBuf>>,
    pub(crate) rate_limit_requests: Option<Sourced<u64>>,
    pub(crate) rate_limit_window_secs: Option<Sourced<u64>>,
    pub(crate) request_timeout_secs: Option<Sourced<u64>>,
}

/// A secret read from the file or the environment, wrapped at once so that
/// no stage holds it in a form `Debug` would print. Reading it from TOML
/// never echoes the value in an error.
#[derive(Debug, Clone)]
pub(crate) struct SecretText(pub(crate) Secret);

/// A list of secrets (`ingest.tokens`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SecretList(pub(crate) Vec<Secret>);

/// A Mixpanel project id, written as a string or an integer.
#[derive(Debug, Clone)]
pub(crate) struct ProjectIdText(pub(crate) String);

impl RawConfig {
    /// Reads the TOML text of a config file.
    pub(crate) fn from_toml(text: &str) -> Result<RawConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Lays the environment over the file. Returns warnings about `BRIDGE_*`
    /// and `BRAZE_*` variables that name no setting.
    pub(crate) fn overlay_env(&mut self, env: &Env) -> Result<Vec<String>, ConfigError> {
        set_text(&mut self.listen, env, keys::LISTEN.env)?;
        set_text(&mut self.ops_listen, env, keys::OPS_LISTEN.env)?;
        set_path(&mut self.tls.cert_file, env, keys::TLS_CERT_FILE.env)?;
        set_path(&mut self.extra_ca_file, env, keys::EXTRA_CA_FILE.env)?;
        set_path(&mut self.tls.key_file, env, keys::TLS_KEY_FILE.env)?;
        set_bool(
            &mut self.ops_on_ingest_listener,
            env,
            keys::OPS_ON_INGEST_LISTENER.env,
        )?;
        set_bool(&mut self.dry_run, env, keys::DRY_RUN.env)?;
        set_text(&mut self.log_format, env, keys::LOG_FORMAT.env)?;

        let ingest = &mut self.ingest;
        if let Some(value) = env.get(keys::TOKENS.env)? {
            let tokens = split_list(value).map(Secret::new).collect();
            ingest.tokens = Some(from_env(SecretList(tokens), keys::TOKENS.env));
        }
        set_path(&mut ingest.tokens_file, env, keys::TOKENS_FILE.env)?;
        set_bool(
            &mut ingest.allow_unauthenticated,
            env,
            keys::ALLOW_UNAUTHENTICATED.env,
        )?;
        set_int(&mut ingest.max_body_bytes, env, &keys::MAX_BODY_BYTES)?;
        set_int(
            &mut ingest.request_timeout_secs,
            env,
            &keys::INGEST_REQUEST_TIMEOUT_SECS,
        )?;
        set_int(
            &mut ingest.max_events_per_batch,
            env,
            &keys::MAX_EVENTS_PER_BATCH,
        )?;
        set_int(
            &mut ingest.max_inflight_body_bytes,
            env,
            &keys::MAX_INFLIGHT_BODY_BYTES,
        )?;
        set_int(
            &mut ingest.header_read_timeout_secs,
            env,
            &keys::HEADER_READ_TIMEOUT_SECS,
        )?;
        set_int(&mut ingest.max_connections, env, &keys::MAX_CONNECTIONS)?;
        set_int(
            &mut ingest.shutdown_grace_secs,
            env,
            &keys::SHUTDOWN_GRACE_SECS,
        )?;

        self.overlay_spool_env(env)?;

        let delivery = &mut self.delivery;
        set_int(&mut delivery.workers, env, &keys::WORKERS)?;
        set_int(&mut delivery.concurrency, env, &keys::CONCURRENCY)?;
        set_int(&mut delivery.linger_ms, env, &keys::LINGER_MS)?;
        set_int(&mut delivery.lease_secs, env, &keys::LEASE_SECS)?;
        set_int(
            &mut delivery.request_timeout_secs,
            env,
            &keys::DELIVERY_REQUEST_TIMEOUT_SECS,
        )?;
        set_int(&mut delivery.max_retries, env, &keys::MAX_RETRIES)?;
        set_int(
            &mut delivery.retry_initial_backoff_secs,
            env,
            &keys::RETRY_INITIAL_BACKOFF_SECS,
        )?;
        set_int(
            &mut delivery.retry_max_backoff_secs,
            env,
            &keys::RETRY_MAX_BACKOFF_SECS,
        )?;
        set_int(&mut delivery.max_batch_events, env, &keys::MAX_BATCH_EVENTS)?;
        set_int(&mut delivery.max_batch_bytes, env, &keys::MAX_BATCH_BYTES)?;
        set_int(&mut delivery.max_attempts, env, &keys::MAX_ATTEMPTS)?;
        set_int(&mut delivery.max_age_secs, env, &keys::MAX_AGE_SECS)?;

        set_list(
            &mut self.mapping.include_types,
            env,
            keys::INCLUDE_TYPES.env,
        )?;
        set_list(
            &mut self.mapping.exclude_types,
            env,
            keys::EXCLUDE_TYPES.env,
        )?;
        set_text(&mut self.archive.url, env, keys::ARCHIVE_URL.env)?;

        overlay_connection(&mut self.mixpanel, env, &keys::DEFAULT_PROJECT_VARS)?;
        self.overlay_project_env(env)?;
        self.cohorts.overlay_env(env)?;
        self.braze.overlay_env(env)?;
        Ok(unknown_variables(env))
    }

    /// Lays over the file the variables of the spool's settings alone:
    /// `BRIDGE_DATA_DIR`, `BRIDGE_SPOOL`, `BRIDGE_SPOOL_MAX_BYTES` and
    /// `BRIDGE_NATS_*` ([`super::spool_only()`] reads no other).
    pub(crate) fn overlay_spool_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        set_path(&mut self.data_dir, env, keys::DATA_DIR.env)?;
        set_text(&mut self.spool.backend, env, keys::SPOOL_BACKEND.env)?;
        set_int(&mut self.spool.max_bytes, env, &keys::SPOOL_MAX_BYTES)?;
        self.nats.overlay_env(env)
    }

    /// `BRIDGE_PROJECT_<NAME>_<KEY>`: each must name a `[[projects]]` entry
    /// of the file, so that a misspelt name is an error, not a silently
    /// missing secret.
    fn overlay_project_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        let mangled: Vec<Option<String>> = self
            .projects
            .iter()
            .map(|project| {
                let name = project.name.as_ref()?;
                Some(keys::mangle_project_name(&name.value))
            })
            .collect();
        for variable in env.names() {
            let Some(rest) = variable.strip_prefix(keys::PROJECT_VAR_PREFIX) else {
                continue;
            };
            let names_a_project = mangled.iter().flatten().any(|name| {
                rest.strip_prefix(name.as_str())
                    .and_then(|suffix| suffix.strip_prefix('_'))
                    .is_some_and(|suffix| keys::PROJECT_VAR_SUFFIXES.contains(&suffix))
            });
            if !names_a_project {
                return Err(ConfigError::UnknownProjectVariable {
                    variable: variable.to_owned(),
                });
            }
        }
        for (project, mangled) in self.projects.iter_mut().zip(mangled) {
            let Some(mangled) = mangled else { continue };
            let vars = ConnectionVars::for_project(&mangled);
            overlay_connection(project, env, &vars)?;
            let routes = format!("{}{mangled}_WORKSPACES", keys::PROJECT_VAR_PREFIX);
            set_list(&mut project.workspaces, env, &routes)?;
            let routes = format!("{}{mangled}_APP_GROUP_IDS", keys::PROJECT_VAR_PREFIX);
            set_list(&mut project.app_group_ids, env, &routes)?;
        }
        Ok(())
    }

    /// Lays the command-line flags over everything else.
    pub(crate) fn overlay_flags(&mut self, flags: &Flags) {
        if let Some(listen) = &flags.listen {
            self.listen = Some(from_flag(listen.clone(), "--listen"));
        }
        if let Some(data_dir) = &flags.data_dir {
            self.data_dir = Some(from_flag(data_dir.clone(), "--data-dir"));
        }
        if let Some(dry_run) = flags.dry_run {
            self.dry_run = Some(from_flag(dry_run, "--dry-run"));
        }
        if let Some(log_format) = &flags.log_format {
            self.log_format = Some(from_flag(log_format.clone(), "--log-format"));
        }
    }
}

impl RawCohorts {
    /// `BRIDGE_COHORT_*`.
    fn overlay_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        set_text(&mut self.webhook_path, env, keys::COHORT_WEBHOOK_PATH.env)?;
        set_value_or_file(
            &mut self.webhook_credentials,
            &mut self.webhook_credentials_file,
            env,
            keys::COHORT_WEBHOOK_CREDENTIALS.env,
            keys::COHORT_WEBHOOK_CREDENTIALS_FILE.env,
            |value| SecretList(split_list(value).map(Secret::new).collect()),
        )?;
        set_bool(
            &mut self.webhook_allow_unauthenticated,
            env,
            keys::COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED.env,
        )?;
        set_int(&mut self.max_body_bytes, env, &keys::COHORT_MAX_BODY_BYTES)?;
        set_int(
            &mut self.max_members_per_page,
            env,
            &keys::COHORT_MAX_MEMBERS_PER_PAGE,
        )?;
        set_text(&mut self.identity, env, keys::COHORT_IDENTITY.env)?;
        set_text(&mut self.writer, env, keys::COHORT_WRITER.env)?;
        set_text(&mut self.attribute, env, keys::COHORT_ATTRIBUTE.env)?;
        set_int(
            &mut self.pull_interval_secs,
            env,
            &keys::COHORT_PULL_INTERVAL_SECS,
        )?;
        set_int_list(&mut self.pull_cohorts, env, keys::COHORT_PULL_COHORTS.env)?;
        Ok(())
    }
}

impl RawBraze {
    /// `BRAZE_*`.
    fn overlay_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        set_secret(
            &mut self.rest_api_key,
            &mut self.rest_api_key_file,
            env,
            keys::BRAZE_REST_API_KEY.env,
            keys::BRAZE_REST_API_KEY_FILE.env,
        )?;
        set_text(&mut self.instance, env, keys::BRAZE_INSTANCE.env)?;
        set_text(&mut self.api_url, env, keys::BRAZE_API_URL.env)?;
        set_text(&mut self.partner_name, env, keys::BRAZE_PARTNER_NAME.env)?;
        set_secret(
            &mut self.partner_api_key,
            &mut self.partner_api_key_file,
            env,
            keys::BRAZE_PARTNER_API_KEY.env,
            keys::BRAZE_PARTNER_API_KEY_FILE.env,
        )?;
        set_secret(
            &mut self.data_import_key,
            &mut self.data_import_key_file,
            env,
            keys::BRAZE_DATA_IMPORT_KEY.env,
            keys::BRAZE_DATA_IMPORT_KEY_FILE.env,
        )?;
        set_int(
            &mut self.rate_limit_requests,
            env,
            &keys::BRAZE_RATE_LIMIT_REQUESTS,
        )?;
        set_int(
            &mut self.rate_limit_window_secs,
            env,
            &keys::BRAZE_RATE_LIMIT_WINDOW_SECS,
        )?;
        set_int(
            &mut self.request_timeout_secs,
            env,
            &keys::BRAZE_REQUEST_TIMEOUT_SECS,
        )?;
        Ok(())
    }
}

fn overlay_connection<S: AsRef<str>>(
    project: &mut RawProject,
    env: &Env,
    vars: &ConnectionVars<S>,
) -> Result<(), ConfigError> {
    if let Some(value) = env.get(vars.project_id.as_ref())? {
        project.project_id = Some(from_env(
            ProjectIdText(value.trim().to_owned()),
            vars.project_id.as_ref(),
        ));
    }
    set_text(
        &mut project.service_account_username,
        env,
        vars.service_account_username.as_ref(),
    )?;
    set_secret(
        &mut project.service_account_secret,
        &mut project.service_account_secret_file,
        env,
        vars.service_account_secret.as_ref(),
        vars.service_account_secret_file.as_ref(),
    )?;
    set_secret(
        &mut project.api_secret,
        &mut project.api_secret_file,
        env,
        vars.api_secret.as_ref(),
        vars.api_secret_file.as_ref(),
    )?;
    set_secret(
        &mut project.project_token,
        &mut project.project_token_file,
        env,
        vars.project_token.as_ref(),
        vars.project_token_file.as_ref(),
    )?;
    set_text(&mut project.region, env, vars.region.as_ref())?;
    set_text(&mut project.api_url, env, vars.api_url.as_ref())?;
    Ok(())
}

/// `BRIDGE_*` and `BRAZE_*` variables that are no setting: probably misspelt.
pub(super) fn unknown_variables(env: &Env) -> Vec<String> {
    let known: Vec<&str> = keys::SERVICE_KEYS
        .iter()
        .map(|key| key.env)
        .chain([keys::CONFIG_VAR])
        .chain(keys::COHORT_KEYS.iter().map(|key| key.env))
        .chain(keys::NATS_KEYS.iter().map(|key| key.env))
        .chain(keys::INT_KEYS.iter().map(|key| key.env))
        .chain(keys::OTHER_BRIDGE_VARS.iter().copied())
        .collect();
    env.names()
        .filter(|name| {
            (name.starts_with("BRIDGE_") && !name.starts_with(keys::PROJECT_VAR_PREFIX))
                || name.starts_with("BRAZE_")
        })
        .filter(|name| !known.contains(name))
        .map(|name| format!("{name} is not a configuration variable and is ignored"))
        .collect()
}

fn from_env<T>(value: T, variable: &str) -> Sourced<T> {
    Sourced {
        value,
        origin: Origin::Env(variable.to_owned()),
    }
}

fn from_flag<T>(value: T, flag: &'static str) -> Sourced<T> {
    Sourced {
        value,
        origin: Origin::Flag(flag),
    }
}

fn set_text(
    slot: &mut Option<Sourced<String>>,
    env: &Env,
    variable: &str,
) -> Result<(), ConfigError> {
    if let Some(value) = env.get(variable)? {
        *slot = Some(from_env(value.trim().to_owned(), variable));
    }
    Ok(())
}

fn set_path(
    slot: &mut Option<Sourced<PathBuf>>,
    env: &Env,
    variable: &str,
) -> Result<(), ConfigError> {
    if let Some(value) = env.get(variable)? {
        *slot = Some(from_env(PathBuf::from(value), variable));
    }
    Ok(())
}

fn set_list(
    slot: &mut Option<Sourced<Vec<String>>>,
    env: &Env,
    variable: &str,
) -> Result<(), ConfigError> {
    if let Some(value) = env.get(variable)? {
        let items = split_list(value).map(str::to_owned).collect();
        *slot = Some(from_env(items, variable));
    }
    Ok(())
}

fn set_bool(
    slot: &mut Option<Sourced<bool>>,
    env: &Env,
    variable: &str,
) -> Result<(), ConfigError> {
    let Some(value) = env.get(variable)? else {
        return Ok(());
    };
    let parsed = match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => true,
        "0" | "false" | "no" | "off" => false,
        _ => {
            return Err(ConfigError::Invalid {
                setting: variable.to_owned(),
                expected: "true or false (or 1 or 0)".to_owned(),
                found: format!("{value:?}"),
            });
        }
    };
    *slot = Some(from_env(parsed, variable));
    Ok(())
}

fn set_int(slot: &mut Option<Sourced<u64>>, env: &Env, key: &IntKey) -> Result<(), ConfigError> {
    let Some(value) = env.get(key.env)? else {
        return Ok(());
    };
    let parsed = value
        .trim()
        .parse::<u64>()
        .map_err(|_| ConfigError::Invalid {
            setting: key.env.to_owned(),
            expected: key.expected(),
            found: format!("{value:?}"),
        })?;
    *slot = Some(from_env(parsed, key.env));
    Ok(())
}

/// A list of non-negative integers (cohort ids), comma-separated.
fn set_int_list(
    slot: &mut Option<Sourced<Vec<u64>>>,
    env: &Env,
    variable: &str,
) -> Result<(), ConfigError> {
    let Some(value) = env.get(variable)? else {
        return Ok(());
    };
    let items = split_list(value)
        .map(|item| {
            item.parse::<u64>().map_err(|_| ConfigError::Invalid {
                setting: variable.to_owned(),
                expected: "comma-separated non-negative integers".to_owned(),
                found: format!("{item:?}"),
            })
        })
        .collect::<Result<Vec<u64>, ConfigError>>()?;
    *slot = Some(from_env(items, variable));
    Ok(())
}

/// A secret and its `*_FILE` twin: setting both in the environment is an
/// error; setting either replaces both from the file.
fn set_secret(
    value_slot: &mut Option<Sourced<SecretText>>,
    file_slot: &mut Option<Sourced<PathBuf>>,
    env: &Env,
    value_var: &str,
    file_var: &str,
) -> Result<(), ConfigError> {
    set_value_or_file(value_slot, file_slot, env, value_var, file_var, |value| {
        SecretText(Secret::new(value.trim()))
    })
}

/// A value and its `*_FILE` twin, the value read by `read`: setting both in
/// the environment is an error; setting either replaces both from the file.
fn set_value_or_file<T>(
    value_slot: &mut Option<Sourced<T>>,
    file_slot: &mut Option<Sourced<PathBuf>>,
    env: &Env,
    value_var: &str,
    file_var: &str,
    read: impl FnOnce(&str) -> T,
) -> Result<(), ConfigError> {
    match (env.get(value_var)?, env.get(file_var)?) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict {
            first: value_var.to_owned(),
            second: file_var.to_owned(),
        }),
        (Some(value), None) => {
            *value_slot = Some(from_env(read(value), value_var));
            *file_slot = None;
            Ok(())
        }
        (None, Some(path)) => {
            *file_slot = Some(from_env(PathBuf::from(path), file_var));
            *value_slot = None;
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

/// A comma-separated list; items are trimmed and empty items dropped.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sourced<T> {
    /// Only the TOML reader deserializes these: it records the value's span.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sourced<T>, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(deserializer)?;
        let offset = spanned.span().start;
        Ok(Sourced {
            value: spanned.into_inner(),
            origin: Origin::File { offset },
        })
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretText, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Accepts a string; an error about any other value never shows it.
struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretText, E> {
        Ok(SecretText(Secret::new(value)))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretText, E> {
        Err(E::invalid_type(Unexpected::Other("an integer"), &self))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretText, E> {
        Err(E::invalid_type(Unexpected::Other("an integer"), &self))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretText, E> {
        Err(E::invalid_type(Unexpected::Other("a float"), &self))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretText, E> {
        Err(E::invalid_type(Unexpected::Other("a boolean"), &self))
    }
}

impl<'de> Deserialize<'de> for SecretList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretList, D::Error> {
        deserializer.deserialize_any(SecretListVisitor)
    }
}

/// Accepts an array of strings; an error about any other value never shows it.
struct SecretListVisitor;

impl<'de> Visitor<'de> for SecretListVisitor {
    type Value = SecretList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SecretList, A::Error> {
        let mut secrets = Vec::new();
        while let Some(SecretText(secret)) = seq.next_element::<SecretText>()? {
            secrets.push(secret);
        }
        Ok(SecretList(secrets))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretList, E> {
        Err(E::invalid_type(Unexpected::Other("a string"), &self))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretList, E> {
        Err(E::invalid_type(Unexpected::Other("an integer"), &self))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretList, E> {
        Err(E::invalid_type(Unexpected::Other("an integer"), &self))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretList, E> {
        Err(E::invalid_type(Unexpected::Other("a float"), &self))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretList, E> {
        Err(E::invalid_type(Unexpected::Other("a boolean"), &self))
    }
}

impl<'de> Deserialize<'de> for ProjectIdText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ProjectIdText, D::Error> {
        deserializer.deserialize_any(ProjectIdVisitor)
    }
}

struct ProjectIdVisitor;

impl Visitor<'_> for ProjectIdVisitor {
    type Value = ProjectIdText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a project id (a string or an integer)")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ProjectIdText, E> {
        Ok(ProjectIdText(value.trim().to_owned()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<ProjectIdText, E> {
        Ok(ProjectIdText(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<ProjectIdText, E> {
        Ok(ProjectIdText(value.to_string()))
    }
}
