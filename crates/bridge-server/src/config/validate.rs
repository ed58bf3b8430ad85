//! The second stage: raw settings become a typed [`Config`], or the first
//! mistake as a [`ConfigError`] naming the setting and where it was set.
//!
//! Secrets named by `*_file` keys and the tokens file are read here. Checks
//! that span several keys live here too: a lease shorter than one request's
//! worst case (and the archive step's, with `archive.url`), a spool smaller
//! than one request body, tokens next to `allow_unauthenticated`. The projects have their own module, `projects`,
//! and so have the cohort import's `[cohorts]` and `[braze]`,
//! `cohorts_validate`, and `[archive]`, `archive_validate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mixpanel_client::{BatchLimits, RetryParams, Secret};

use super::keys::{self, IntKey};
use super::raw::{self, Origin, RawConfig, SecretText, Sourced};
use super::{
    Config, ConfigError, ConfigFile, DeliveryConfig, ExtraCa, IngestAuth, IngestConfig, LogFormat,
    OpsListener, Provenance, SpoolConfig, TlsConfig, cohorts_validate, projects,
};
use currents_mixpanel::TypeFilter;

/// `cohorts_only`: [`super::Flags::cohorts_only`].
pub(super) fn validate(
    raw: RawConfig,
    file: Option<&ConfigFile>,
    warnings: Vec<String>,
    cohorts_only: bool,
) -> Result<Config, ConfigError> {
    let mut cx = Context {
        file,
        provenance: Provenance {
            file: file.map(|file| file.path.clone()),
            ..Provenance::default()
        },
        warnings,
    };

    let listen_text = cx.text(keys::LISTEN.key, raw.listen, keys::DEFAULT_LISTEN);
    let listen = listen_text.value.parse::<SocketAddr>().map_err(|_| {
        cx.invalid(
            keys::LISTEN.key,
            listen_text.origin.as_ref(),
            "a socket address such as 127.0.0.1:8080",
            format!("{:?}", listen_text.value),
        )
    })?;
    let ops = validate_ops(&mut cx, raw.ops_listen, raw.ops_on_ingest_listener, listen)?;
    let tls = validate_tls(&mut cx, raw.tls, listen)?;
    let extra_ca = match raw.extra_ca_file {
        Some(path) => {
            cx.record(keys::EXTRA_CA_FILE.key, &path.origin);
            let setting = cx.setting(keys::EXTRA_CA_FILE.key, Some(&path.origin));
            let pem =
                std::fs::read(&path.value).map_err(|source| ConfigError::ReadSettingFile {
                    setting: setting.clone(),
                    path: path.value.clone(),
                    source,
                })?;
            if !pem
                .windows(27)
                .any(|window| window == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(cx.invalid(
                    keys::EXTRA_CA_FILE.key,
                    Some(&path.origin),
                    "a file of PEM certificates (-----BEGIN CERTIFICATE-----)",
                    path.value.display().to_string(),
                ));
            }
            Some(ExtraCa {
                path: path.value,
                pem,
            })
        }
        None => None,
    };
    let data_dir = match raw.data_dir {
        Some(data_dir) => {
            cx.record(keys::DATA_DIR.key, &data_dir.origin);
            if data_dir.value.as_os_str().is_empty() {
                return Err(cx.invalid(
                    keys::DATA_DIR.key,
                    Some(&data_dir.origin),
                    "a directory",
                    "an empty path".to_owned(),
                ));
            }
            data_dir.value
        }
        None => PathBuf::from(keys::DEFAULT_DATA_DIR),
    };
    let dry_run = cx.bool(keys::DRY_RUN.key, raw.dry_run);
    let log_format_text = cx.text(keys::LOG_FORMAT.key, raw.log_format, "text");
    let log_format = log_format_text.value.parse::<LogFormat>().map_err(|_| {
        cx.invalid(
            keys::LOG_FORMAT.key,
            log_format_text.origin.as_ref(),
            "text or json",
            format!("{:?}", log_format_text.value),
        )
    })?;

    let ingest = validate_ingest(&mut cx, raw.ingest, listen, cohorts_only)?;
    let spool_max_bytes = cx.int(&keys::SPOOL_MAX_BYTES, raw.spool.max_bytes)?;
    if spool_max_bytes.value < ingest.max_body_bytes as u64 {
        return Err(cx.invalid(
            keys::SPOOL_MAX_BYTES.key,
            spool_max_bytes.origin.as_ref(),
            &format!(
                "at least ingest.max_body_bytes ({}): one request must fit",
                ingest.max_body_bytes
            ),
            spool_max_bytes.value.to_string(),
        ));
    }
    let backend = super::nats_validate::validate_backend(
        &mut cx,
        raw.spool.backend,
        raw.nats,
        spool_max_bytes.value,
    )?;
    let spool = SpoolConfig {
        max_bytes: spool_max_bytes.value,
        backend,
    };
    let archive = super::archive_validate::validate_archive(&mut cx, raw.archive)?;
    let delivery = validate_delivery(&mut cx, raw.delivery, archive.is_some())?;
    let type_filter = validate_mapping(&mut cx, raw.mapping)?;

    let default_project = projects::validate_default_project(&mut cx, raw.mixpanel, dry_run)?;
    let mut projects = Vec::with_capacity(raw.projects.len());
    for (project_idx, raw_project) in raw.projects.into_iter().enumerate() {
        let project =
            projects::validate_project(&mut cx, raw_project, project_idx, &projects, dry_run)?;
        projects.push(project);
    }
    let cohorts =
        cohorts_validate::validate_cohorts(&mut cx, raw.cohorts, raw.braze, listen, dry_run)?;

    Ok(Config {
        listen,
        ops,
        tls,
        extra_ca,
        data_dir,
        dry_run,
        log_format,
        ingest,
        spool,
        delivery,
        archive,
        type_filter,
        default_project,
        projects,
        cohorts,
        provenance: cx.provenance,
        warnings: cx.warnings,
    })
}

/// Where the operations endpoints are served: their own listener (a
/// loopback address by default), or the ingest listener when the operator
/// says so.
fn validate_ops(
    cx: &mut Context<'_>,
    raw_listen: Option<Sourced<String>>,
    raw_shared: Option<Sourced<bool>>,
    listen: SocketAddr,
) -> Result<OpsListener, ConfigError> {
    let shared_origin = raw_shared
        .as_ref()
        .filter(|shared| shared.value)
        .map(|shared| shared.origin.clone());
    let explicit_listen = raw_listen.as_ref().map(|value| value.origin.clone());
    let shared = cx.bool(keys::OPS_ON_INGEST_LISTENER.key, raw_shared);
    if let (Some(shared_origin), Some(listen_origin)) = (&shared_origin, &explicit_listen) {
        return Err(ConfigError::Conflict {
            first: cx.setting(keys::OPS_LISTEN.key, Some(listen_origin)),
            second: cx.setting(keys::OPS_ON_INGEST_LISTENER.key, Some(shared_origin)),
        });
    }
    if shared {
        if !listen.ip().is_loopback() {
            cx.warnings.push(format!(
                "/status, /metrics, /readyz and /healthz are served on the ingest listener {listen} (ops_on_ingest_listener): anyone who reaches it can read project names, backlog sizes and Mixpanel's error messages"
            ));
        }
        return Ok(OpsListener::IngestListener);
    }
    let text = cx.text(keys::OPS_LISTEN.key, raw_listen, keys::DEFAULT_OPS_LISTEN);
    let address = text.value.parse::<SocketAddr>().map_err(|_| {
        cx.invalid(
            keys::OPS_LISTEN.key,
            text.origin.as_ref(),
            "a socket address such as 127.0.0.1:9090",
            format!("{:?}", text.value),
        )
    })?;
    if address == listen {
        return Err(cx.invalid(
            keys::OPS_LISTEN.key,
            text.origin.as_ref(),
            "an address other than listen's (or ops_on_ingest_listener = true)",
            format!("{:?}", text.value),
        ));
    }
    if !address.ip().is_loopback() {
        cx.warnings.push(format!(
            "ops_listen {address} is not a loopback address: /status and /metrics reveal project names, backlog sizes and Mixpanel's error messages to whoever reaches it"
        ));
    }
    Ok(OpsListener::Address(address))
}

/// `[tls]`: both files or neither. Without TLS on a non-loopback address,
/// a warning: the bearer token would cross the network in clear text
/// unless a proxy in front terminates TLS.
fn validate_tls(
    cx: &mut Context<'_>,
    raw: raw::RawTls,
    listen: SocketAddr,
) -> Result<Option<TlsConfig>, ConfigError> {
    match (raw.cert_file, raw.key_file) {
        (Some(cert_file), Some(key_file)) => {
            cx.record(keys::TLS_CERT_FILE.key, &cert_file.origin);
            cx.record(keys::TLS_KEY_FILE.key, &key_file.origin);
            Ok(Some(TlsConfig {
                cert_file: cert_file.value,
                key_file: key_file.value,
            }))
        }
        (Some(cert_file), None) => Err(cx.invalid(
            keys::TLS_KEY_FILE.key,
            None,
            &format!(
                "a key file, since {} is set",
                cx.setting(keys::TLS_CERT_FILE.key, Some(&cert_file.origin))
            ),
            "none".to_owned(),
        )),
        (None, Some(key_file)) => Err(cx.invalid(
            keys::TLS_CERT_FILE.key,
            None,
            &format!(
                "a certificate file, since {} is set",
                cx.setting(keys::TLS_KEY_FILE.key, Some(&key_file.origin))
            ),
            "none".to_owned(),
        )),
        (None, None) => {
            if !listen.ip().is_loopback() {
                cx.warnings.push(format!(
                    "listen {listen} is not a loopback address and serves plain HTTP: Braze's bearer token and events cross the network in clear text unless a proxy in front terminates TLS; set tls.cert_file and tls.key_file to terminate it here"
                ));
            }
            Ok(None)
        }
    }
}

/// What validation carries along: the file for messages, the notes of
/// where each setting came from, the warnings.
pub(super) struct Context<'a> {
    pub(super) file: Option<&'a ConfigFile>,
    pub(super) provenance: Provenance,
    pub(super) warnings: Vec<String>,
}

/// A validated value and where it was set (`None`: the default).
pub(super) struct Valued<T> {
    pub(super) value: T,
    pub(super) origin: Option<Origin>,
}

impl Context<'_> {
    /// How an error names a setting: the variable, the flag, or
    /// `file:line: key`; a default is named by its key.
    pub(super) fn setting(&self, key: &str, origin: Option<&Origin>) -> String {
        match origin {
            Some(Origin::Env(variable)) => variable.clone(),
            Some(Origin::Flag(flag)) => (*flag).to_owned(),
            Some(Origin::File { offset }) => match self.file {
                Some(file) => format!("{}: {key}", file.location(*offset)),
                None => key.to_owned(),
            },
            None => format!("{key} (default)"),
        }
    }

    /// Where a setting came from, for the rendering: the variable, the flag
    /// or `file:line`.
    pub(super) fn note(&self, origin: &Origin) -> String {
        match origin {
            Origin::Env(variable) => variable.clone(),
            Origin::Flag(flag) => (*flag).to_owned(),
            Origin::File { offset } => match self.file {
                Some(file) => file.location(*offset),
                None => "the config file".to_owned(),
            },
        }
    }

    pub(super) fn record(&mut self, key: &str, origin: &Origin) {
        let note = self.note(origin);
        self.provenance.notes.insert(key.to_owned(), note);
    }

    pub(super) fn invalid(
        &self,
        key: &str,
        origin: Option<&Origin>,
        expected: &str,
        found: String,
    ) -> ConfigError {
        ConfigError::Invalid {
            setting: self.setting(key, origin),
            expected: expected.to_owned(),
            found,
        }
    }

    pub(super) fn text(
        &mut self,
        key: &str,
        raw: Option<Sourced<String>>,
        default: &str,
    ) -> Valued<String> {
        match raw {
            Some(raw) => {
                self.record(key, &raw.origin);
                Valued {
                    value: raw.value.trim().to_owned(),
                    origin: Some(raw.origin),
                }
            }
            None => Valued {
                value: default.to_owned(),
                origin: None,
            },
        }
    }

    pub(super) fn bool(&mut self, key: &str, raw: Option<Sourced<bool>>) -> bool {
        match raw {
            Some(raw) => {
                self.record(key, &raw.origin);
                raw.value
            }
            None => false,
        }
    }

    /// An optional integer key (no default): its bounds are checked when set.
    pub(super) fn optional_int(
        &mut self,
        key: &IntKey,
        raw: Option<Sourced<u64>>,
    ) -> Result<Option<Valued<u64>>, ConfigError> {
        raw.map(|raw| self.int(key, Some(raw))).transpose()
    }

    pub(super) fn int(
        &mut self,
        key: &IntKey,
        raw: Option<Sourced<u64>>,
    ) -> Result<Valued<u64>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Valued {
                value: key.default,
                origin: None,
            });
        };
        self.record(key.key, &raw.origin);
        if !(key.min..=key.max).contains(&raw.value) {
            return Err(self.invalid(
                key.key,
                Some(&raw.origin),
                &key.expected(),
                raw.value.to_string(),
            ));
        }
        Ok(Valued {
            value: raw.value,
            origin: Some(raw.origin),
        })
    }

    /// A list of names (type patterns, workspaces): trimmed, none empty.
    pub(super) fn names(
        &mut self,
        key: &str,
        raw: Option<Sourced<Vec<String>>>,
        what: &str,
    ) -> Result<Option<Valued<Vec<String>>>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        self.record(key, &raw.origin);
        let mut names: Vec<String> = Vec::with_capacity(raw.value.len());
        for name in &raw.value {
            let name = name.trim();
            if name.is_empty() {
                return Err(self.invalid(key, Some(&raw.origin), what, "\"\"".to_owned()));
            }
            if !names.iter().any(|seen| seen == name) {
                names.push(name.to_owned());
            }
        }
        Ok(Some(Valued {
            value: names,
            origin: Some(raw.origin),
        }))
    }

    /// A secret given as a value or as a file holding it (`<key>_file`).
    pub(super) fn secret(
        &mut self,
        key: &str,
        value: Option<Sourced<SecretText>>,
        file: Option<Sourced<PathBuf>>,
    ) -> Result<Option<Valued<Secret>>, ConfigError> {
        let file_key = format!("{key}_file");
        match (value, file) {
            (Some(value), Some(file)) => Err(ConfigError::Conflict {
                first: self.setting(key, Some(&value.origin)),
                second: self.setting(&file_key, Some(&file.origin)),
            }),
            (Some(value), None) => {
                let secret = value.value.0.expose().trim();
                if secret.is_empty() {
                    return Err(self.invalid(
                        key,
                        Some(&value.origin),
                        "a secret",
                        "an empty string".to_owned(),
                    ));
                }
                self.record(key, &value.origin);
                Ok(Some(Valued {
                    value: Secret::new(secret),
                    origin: Some(value.origin),
                }))
            }
            (None, Some(file)) => {
                let setting = self.setting(&file_key, Some(&file.origin));
                let text = read_setting_file(&setting, &file.value)?;
                let secret = text.trim();
                let n_lines = secret.lines().count();
                if n_lines != 1 {
                    return Err(ConfigError::Invalid {
                        setting: format!("{setting} ({})", file.value.display()),
                        expected: "a file holding the secret on one line".to_owned(),
                        found: format!("{n_lines} lines"),
                    });
                }
                let note = format!(
                    "{}, named by {}",
                    file.value.display(),
                    self.note(&file.origin)
                );
                self.provenance.notes.insert(key.to_owned(), note);
                Ok(Some(Valued {
                    value: Secret::new(secret),
                    origin: Some(file.origin),
                }))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The text of a file named by a setting (a secret's, the tokens').
pub(super) fn read_setting_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadSettingFile {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn validate_ingest(
    cx: &mut Context<'_>,
    raw: raw::RawIngest,
    listen: SocketAddr,
    cohorts_only: bool,
) -> Result<IngestConfig, ConfigError> {
    let mut tokens: Vec<Secret> = Vec::new();
    let mut token_notes: Vec<String> = Vec::new();
    let mut push_token = |token: &str, note: String| {
        if !tokens.iter().any(|seen| seen.expose() == token) {
            tokens.push(Secret::new(token));
            token_notes.push(note);
        }
    };
    let tokens_setting = raw
        .tokens
        .as_ref()
        .map(|tokens| cx.setting(keys::TOKENS.key, Some(&tokens.origin)))
        .or_else(|| {
            let tokens_file = raw.tokens_file.as_ref()?;
            Some(cx.setting(keys::TOKENS_FILE.key, Some(&tokens_file.origin)))
        });
    if let Some(raw_tokens) = raw.tokens {
        cx.record(keys::TOKENS.key, &raw_tokens.origin);
        let note = cx.note(&raw_tokens.origin);
        for token in &raw_tokens.value.0 {
            let token = token.expose().trim();
            check_token(cx, keys::TOKENS.key, Some(&raw_tokens.origin), token)?;
            push_token(token, note.clone());
        }
    }
    if let Some(tokens_file) = raw.tokens_file {
        cx.record(keys::TOKENS_FILE.key, &tokens_file.origin);
        let setting = cx.setting(keys::TOKENS_FILE.key, Some(&tokens_file.origin));
        let text = read_setting_file(&setting, &tokens_file.value)?;
        let mut n_tokens = 0;
        for (line_idx, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            let line_setting = format!(
                "{setting} ({} line {})",
                tokens_file.value.display(),
                line_idx + 1
            );
            if token.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid {
                    setting: line_setting,
                    expected: "one token per line".to_owned(),
                    found: "a line with a space".to_owned(),
                });
            }
            n_tokens += 1;
            let note = format!("{} line {}", tokens_file.value.display(), line_idx + 1);
            push_token(token, note);
        }
        cx.provenance.tokens_file = Some(tokens_file.value.clone());
        if n_tokens == 0 {
            return Err(ConfigError::Invalid {
                setting: format!("{setting} ({})", tokens_file.value.display()),
                expected: "at least one token, one per line".to_owned(),
                found: "none".to_owned(),
            });
        }
    }
    let allow_origin = raw
        .allow_unauthenticated
        .as_ref()
        .map(|allow| allow.origin.clone());
    let allow_unauthenticated = cx.bool(keys::ALLOW_UNAUTHENTICATED.key, raw.allow_unauthenticated);
    let auth = match (tokens.is_empty(), allow_unauthenticated) {
        (false, false) => IngestAuth::Tokens(tokens),
        // The `cohorts` commands serve no ingest: no token needed.
        (true, false) if cohorts_only => IngestAuth::Unauthenticated,
        (true, false) => return Err(ConfigError::NoTokens),
        (false, true) => {
            return Err(ConfigError::Conflict {
                first: cx.setting(keys::ALLOW_UNAUTHENTICATED.key, allow_origin.as_ref()),
                second: tokens_setting.unwrap_or_else(|| keys::TOKENS.key.to_owned()),
            });
        }
        (true, true) => {
            if !listen.ip().is_loopback() {
                return Err(cx.invalid(
                    keys::ALLOW_UNAUTHENTICATED.key,
                    allow_origin.as_ref(),
                    "a loopback listen address with it (it is for local tests only)",
                    listen.to_string(),
                ));
            }
            cx.warnings.push(
                "ingest accepts requests without a token (ingest.allow_unauthenticated): for local tests only"
                    .to_owned(),
            );
            IngestAuth::Unauthenticated
        }
    };
    if let IngestAuth::Tokens(tokens) = &auth {
        let n_short = tokens
            .iter()
            .filter(|token| token.expose().chars().count() < MIN_STRONG_TOKEN_CHARS)
            .count();
        if n_short > 0 {
            cx.warnings.push(format!(
                "{n_short} Currents token(s) shorter than {MIN_STRONG_TOKEN_CHARS} characters: a short token can be guessed; use a long random one (e.g. `openssl rand -base64 32`)"
            ));
        }
    }
    cx.provenance.token_notes = token_notes;
    let max_body_bytes = cx.int(&keys::MAX_BODY_BYTES, raw.max_body_bytes)?;
    let request_timeout_secs =
        cx.int(&keys::INGEST_REQUEST_TIMEOUT_SECS, raw.request_timeout_secs)?;
    let max_events_per_batch = cx.int(&keys::MAX_EVENTS_PER_BATCH, raw.max_events_per_batch)?;
    let max_inflight_body_bytes =
        cx.int(&keys::MAX_INFLIGHT_BODY_BYTES, raw.max_inflight_body_bytes)?;
    let header_read_timeout_secs = cx.int(
        &keys::HEADER_READ_TIMEOUT_SECS,
        raw.header_read_timeout_secs,
    )?;
    let max_connections = cx.int(&keys::MAX_CONNECTIONS, raw.max_connections)?;
    let shutdown_grace_secs = cx.int(&keys::SHUTDOWN_GRACE_SECS, raw.shutdown_grace_secs)?;
    Ok(IngestConfig {
        auth,
        max_body_bytes: usize::try_from(max_body_bytes.value).unwrap_or(usize::MAX),
        request_timeout: Duration::from_secs(request_timeout_secs.value),
        max_events_per_batch: usize::try_from(max_events_per_batch.value).unwrap_or(usize::MAX),
        max_inflight_body_bytes: usize::try_from(max_inflight_body_bytes.value)
            .unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(header_read_timeout_secs.value),
        max_connections: usize::try_from(max_connections.value).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_secs(shutdown_grace_secs.value),
    })
}

/// Tokens shorter than this are warned about (not refused: a test set-up
/// may use a short one).
const MIN_STRONG_TOKEN_CHARS: usize = 16;

/// A token must be non-empty and without spaces. The message never shows it.
fn check_token(
    cx: &Context<'_>,
    key: &str,
    origin: Option<&Origin>,
    token: &str,
) -> Result<(), ConfigError> {
    if token.is_empty() {
        return Err(cx.invalid(key, origin, "non-empty tokens", "an empty token".to_owned()));
    }
    if token.contains(char::is_whitespace) {
        return Err(cx.invalid(
            key,
            origin,
            "tokens without spaces",
            "a token with a space".to_owned(),
        ));
    }
    Ok(())
}

/// `archived`: `archive.url` is set, so each lease also covers the
/// archive step before the requests.
fn validate_delivery(
    cx: &mut Context<'_>,
    raw: raw::RawDelivery,
    archived: bool,
) -> Result<DeliveryConfig, ConfigError> {
    let workers = cx.int(&keys::WORKERS, raw.workers)?.value;
    let concurrency = cx.int(&keys::CONCURRENCY, raw.concurrency)?.value;
    let linger_ms = cx.int(&keys::LINGER_MS, raw.linger_ms)?.value;
    let lease_secs = cx.int(&keys::LEASE_SECS, raw.lease_secs)?;
    let request_timeout_secs = cx
        .int(
            &keys::DELIVERY_REQUEST_TIMEOUT_SECS,
            raw.request_timeout_secs,
        )?
        .value;
    let max_retries = cx.int(&keys::MAX_RETRIES, raw.max_retries)?.value;
    let initial_backoff_secs = cx
        .int(
            &keys::RETRY_INITIAL_BACKOFF_SECS,
            raw.retry_initial_backoff_secs,
        )?
        .value;
    let max_backoff_secs = cx.int(&keys::RETRY_MAX_BACKOFF_SECS, raw.retry_max_backoff_secs)?;
    let max_batch_events = cx.int(&keys::MAX_BATCH_EVENTS, raw.max_batch_events)?.value;
    let max_batch_bytes = cx.int(&keys::MAX_BATCH_BYTES, raw.max_batch_bytes)?.value;

    if max_backoff_secs.value < initial_backoff_secs {
        return Err(cx.invalid(
            keys::RETRY_MAX_BACKOFF_SECS.key,
            max_backoff_secs.origin.as_ref(),
            &format!("at least delivery.retry_initial_backoff_secs ({initial_backoff_secs})"),
            max_backoff_secs.value.to_string(),
        ));
    }
    // The worst case of one request, retries included (see the module doc
    // of `mixpanel_client::retry`): a worker must hold its lease that long,
    // and with an archive, the archive step's bound before it too.
    let request_worst_case_secs = (max_retries + 1)
        .saturating_mul(request_timeout_secs)
        .saturating_add(max_retries.saturating_mul(max_backoff_secs.value));
    let archive_secs = if archived {
        crate::delivery::ARCHIVE_TIMEOUT.as_secs()
    } else {
        0
    };
    let worst_case_secs = request_worst_case_secs.saturating_add(archive_secs);
    if lease_secs.value < worst_case_secs {
        let archive_term = if archived {
            format!(" + {archive_secs} s for the archive writes (archive.url is set)")
        } else {
            String::new()
        };
        return Err(cx.invalid(
            keys::LEASE_SECS.key,
            lease_secs.origin.as_ref(),
            &format!(
                "at least {worst_case_secs}, the worst case of one request: (delivery.max_retries + 1) × delivery.request_timeout_secs + delivery.max_retries × delivery.retry_max_backoff_secs{archive_term}"
            ),
            lease_secs.value.to_string(),
        ));
    }

    let max_attempts = cx.int(&keys::MAX_ATTEMPTS, raw.max_attempts)?.value;
    let max_age_secs = cx.int(&keys::MAX_AGE_SECS, raw.max_age_secs)?.value;
    Ok(DeliveryConfig {
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
        max_age: Duration::from_secs(max_age_secs),
        workers: workers as usize,
        concurrency: concurrency as usize,
        linger: Duration::from_millis(linger_ms),
        lease: Duration::from_secs(lease_secs.value),
        request_timeout: Duration::from_secs(request_timeout_secs),
        retry: RetryParams {
            initial_delay: Duration::from_secs(initial_backoff_secs),
            max_delay: Duration::from_secs(max_backoff_secs.value),
            max_retries: max_retries as u32,
            ..RetryParams::default()
        },
        batch_limits: BatchLimits {
            max_events: max_batch_events as usize,
            max_bytes: max_batch_bytes as usize,
            ..BatchLimits::default()
        },
    })
}

fn validate_mapping(cx: &mut Context<'_>, raw: raw::RawMapping) -> Result<TypeFilter, ConfigError> {
    const PATTERN: &str = "type names or prefixes such as users.messages.email.*";
    let include = cx.names(keys::INCLUDE_TYPES.key, raw.include_types, PATTERN)?;
    if let Some(include) = &include
        && include.value.is_empty()
    {
        return Err(cx.invalid(
            keys::INCLUDE_TYPES.key,
            include.origin.as_ref(),
            "at least one type pattern (leave the key out to export every type)",
            "[]".to_owned(),
        ));
    }
    let exclude = cx.names(keys::EXCLUDE_TYPES.key, raw.exclude_types, PATTERN)?;
    let include = include.map(|include| include.value);
    let exclude = exclude.map(|exclude| exclude.value).unwrap_or_default();
    let type_filter = TypeFilter::new(include.as_deref(), &exclude);
    for pattern in type_filter.unmatched_patterns() {
        cx.warnings.push(format!(
            "type pattern {pattern:?} in [mapping] matches no known Currents event type"
        ));
    }
    cx.provenance.include_types = include;
    cx.provenance.exclude_types = exclude;
    Ok(type_filter)
}
