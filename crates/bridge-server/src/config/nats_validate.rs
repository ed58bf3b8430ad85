//! Validation of `spool.backend` and `[nats]` into a [`SpoolBackend`].
//!
//! With the SQLite spool, a `[nats]` key set is a warning (probably meant
//! for `spool.backend = "nats"`). With NATS: at least one server URL
//! (`nats://`, `tls://`, `ws://` or `wss://`), at most one way to
//! authenticate, JetStream names that NATS accepts, an odd replica count,
//! and a warning when credentials would cross the network in clear text.
//!
//! What only the servers know is not checked here: their `max_payload`
//! (which a batch of `ingest.max_body_bytes` must fit) and the streams,
//! consumer and buckets they already hold are compared with the
//! configuration by `check-config --connect`.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{self, Key};
use super::raw::{RawNats, Sourced};
use super::validate::{Context, Valued};
use super::{ConfigError, SpoolBackend};
use crate::nats::{NatsAuth, NatsOptions};

/// `spool.backend` and `[nats]`; `max_bytes` is `spool.max_bytes`.
pub(super) fn validate_backend(
    cx: &mut Context<'_>,
    backend: Option<Sourced<String>>,
    nats: RawNats,
    max_bytes: u64,
) -> Result<SpoolBackend, ConfigError> {
    let backend = cx.text(keys::SPOOL_BACKEND.key, backend, "sqlite");
    match backend.value.to_ascii_lowercase().as_str() {
        "sqlite" => {
            if let Some(origin) = nats.any_set() {
                let setting = cx.setting("nats", Some(origin));
                cx.warnings.push(format!(
                    "{setting} is set but unused: spool.backend is sqlite (set BRIDGE_SPOOL=nats to use NATS)"
                ));
            }
            Ok(SpoolBackend::Sqlite)
        }
        "nats" => Ok(SpoolBackend::Nats(Box::new(validate_nats(
            cx, nats, max_bytes,
        )?))),
        _ => Err(cx.invalid(
            keys::SPOOL_BACKEND.key,
            backend.origin.as_ref(),
            "sqlite or nats",
            format!("{:?}", backend.value),
        )),
    }
}

fn validate_nats(
    cx: &mut Context<'_>,
    raw: RawNats,
    max_bytes: u64,
) -> Result<NatsOptions, ConfigError> {
    let auth = validate_auth(cx, &raw)?;
    let servers = validate_servers(cx, raw.servers)?;
    let mut options = NatsOptions::new(servers);
    options.max_bytes = max_bytes;
    options.auth = auth;
    options.tls_ca_file = raw.tls_ca_file.map(|path| {
        cx.record(keys::NATS_TLS_CA_FILE.key, &path.origin);
        path.value
    });
    options.tls_required = cx.bool(keys::NATS_TLS_REQUIRED.key, raw.tls_required);
    if options.tls_required
        && let Some(plain) = options.servers.iter().find(|url| is_plain(url))
    {
        return Err(ConfigError::Invalid {
            setting: keys::NATS_SERVERS.key.to_owned(),
            expected: "tls:// or wss:// URLs, since nats.tls_required is set".to_owned(),
            found: format!("{plain:?}"),
        });
    }
    let sends_credentials = options.auth != NatsAuth::None;
    if sends_credentials && !options.tls_required {
        let remote_plain = options
            .servers
            .iter()
            .find(|url| is_plain(url) && !super::cohorts_validate::is_loopback_url(url));
        if let Some(url) = remote_plain {
            cx.warnings.push(format!(
                "NATS server {url} is plain nats:// to a host other than loopback: the NATS credentials and every batch travel in clear text (use tls://, or set nats.tls_required)"
            ));
        }
    }
    options.stream = stream_name(cx, &keys::NATS_STREAM, raw.stream, &options.stream)?;
    options.dead_letter_stream = stream_name(
        cx,
        &keys::NATS_DEAD_LETTER_STREAM,
        raw.dead_letter_stream,
        &options.dead_letter_stream,
    )?;
    if options.stream == options.dead_letter_stream {
        return Err(ConfigError::Conflict {
            first: keys::NATS_STREAM.key.to_owned(),
            second: format!(
                "{} (both name {:?})",
                keys::NATS_DEAD_LETTER_STREAM.key,
                options.stream
            ),
        });
    }
    options.consumer = stream_name(cx, &keys::NATS_CONSUMER, raw.consumer, &options.consumer)?;
    options.kv_bucket_prefix = stream_name(
        cx,
        &keys::NATS_KV_BUCKET_PREFIX,
        raw.kv_bucket_prefix,
        &options.kv_bucket_prefix,
    )?;
    let prefix = cx.text(
        keys::NATS_SUBJECT_PREFIX.key,
        raw.subject_prefix,
        &options.subject_prefix,
    );
    if !is_subject_prefix(&prefix.value) {
        return Err(cx.invalid(
            keys::NATS_SUBJECT_PREFIX.key,
            prefix.origin.as_ref(),
            "dot-separated NATS tokens without wildcards or spaces (bridge.batches)",
            format!("{:?}", prefix.value),
        ));
    }
    options.subject_prefix = prefix.value;
    let replicas = cx.int(&keys::NATS_REPLICAS, raw.replicas)?;
    if replicas.value % 2 == 0 {
        return Err(cx.invalid(
            keys::NATS_REPLICAS.key,
            replicas.origin.as_ref(),
            "1, 3 or 5 (an odd number, so that a majority can always be had)",
            replicas.value.to_string(),
        ));
    }
    options.replicas = replicas.value as usize;
    options.duplicate_window = Duration::from_secs(
        cx.int(&keys::NATS_DUPLICATE_WINDOW_SECS, raw.duplicate_window_secs)?
            .value,
    );
    options.publish_timeout = Duration::from_millis(
        cx.int(&keys::NATS_PUBLISH_TIMEOUT_MS, raw.publish_timeout_ms)?
            .value,
    );
    options.connect_timeout = Duration::from_secs(
        cx.int(&keys::NATS_CONNECT_TIMEOUT_SECS, raw.connect_timeout_secs)?
            .value,
    );
    Ok(options)
}

fn validate_servers(
    cx: &mut Context<'_>,
    raw: Option<Sourced<Vec<String>>>,
) -> Result<Vec<String>, ConfigError> {
    let expected =
        "NATS server URLs such as nats://127.0.0.1:4222 (nats://, tls://, ws:// or wss://)";
    let Some(Valued {
        value: servers,
        origin,
    }) = cx.names(keys::NATS_SERVERS.key, raw, expected)?
    else {
        return Err(ConfigError::Invalid {
            setting: format!("{} (or {})", keys::NATS_SERVERS.env, keys::NATS_SERVERS.key),
            expected: format!("{expected}, since spool.backend is nats"),
            found: "nothing".to_owned(),
        });
    };
    if servers.is_empty() {
        return Err(cx.invalid(
            keys::NATS_SERVERS.key,
            origin.as_ref(),
            expected,
            "an empty list".to_owned(),
        ));
    }
    for url in &servers {
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !scheme_ok || url.contains(char::is_whitespace) {
            return Err(cx.invalid(
                keys::NATS_SERVERS.key,
                origin.as_ref(),
                expected,
                format!("{url:?}"),
            ));
        }
    }
    Ok(servers)
}

/// At most one of user/password, token, NKey seed, creds file.
fn validate_auth(cx: &mut Context<'_>, raw: &RawNats) -> Result<NatsAuth, ConfigError> {
    let password = cx.secret(
        keys::NATS_PASSWORD.key,
        raw.password.clone(),
        raw.password_file.clone(),
    )?;
    let token = cx.secret(
        keys::NATS_TOKEN.key,
        raw.token.clone(),
        raw.token_file.clone(),
    )?;
    let nkey = cx.secret(
        keys::NATS_NKEY_SEED.key,
        raw.nkey_seed.clone(),
        raw.nkey_seed_file.clone(),
    )?;
    let user = raw.user.clone();
    if let Some(user) = &user {
        cx.record(keys::NATS_USER.key, &user.origin);
    }
    let creds_file: Option<Valued<PathBuf>> = raw.creds_file.clone().map(|path| {
        cx.record(keys::NATS_CREDS_FILE.key, &path.origin);
        Valued {
            value: path.value,
            origin: Some(path.origin),
        }
    });
    let mut given: Vec<String> = Vec::new();
    if let Some(user) = &user {
        given.push(cx.setting(keys::NATS_USER.key, Some(&user.origin)));
    }
    if let Some(token) = &token {
        given.push(cx.setting(keys::NATS_TOKEN.key, token.origin.as_ref()));
    }
    if let Some(nkey) = &nkey {
        given.push(cx.setting(keys::NATS_NKEY_SEED.key, nkey.origin.as_ref()));
    }
    if let Some(creds) = &creds_file {
        given.push(cx.setting(keys::NATS_CREDS_FILE.key, creds.origin.as_ref()));
    }
    if given.len() > 1 {
        return Err(ConfigError::Conflict {
            first: given[0].clone(),
            second: given[1].clone(),
        });
    }
    match (user, password) {
        (Some(user), Some(password)) => {
            let user_name = user.value.trim().to_owned();
            if user_name.is_empty() {
                return Err(cx.invalid(
                    keys::NATS_USER.key,
                    Some(&user.origin),
                    "a NATS user name",
                    "an empty string".to_owned(),
                ));
            }
            return Ok(NatsAuth::UserPassword {
                user: user_name,
                password: password.value,
            });
        }
        (Some(user), None) => {
            return Err(ConfigError::Invalid {
                setting: cx.setting(keys::NATS_USER.key, Some(&user.origin)),
                expected: format!(
                    "{} (or {}) beside it",
                    keys::NATS_PASSWORD.env,
                    keys::NATS_PASSWORD.key
                ),
                found: "a user without a password".to_owned(),
            });
        }
        (None, Some(password)) => {
            return Err(ConfigError::Invalid {
                setting: cx.setting(keys::NATS_PASSWORD.key, password.origin.as_ref()),
                expected: format!(
                    "{} (or {}) beside it",
                    keys::NATS_USER.env,
                    keys::NATS_USER.key
                ),
                found: "a password without a user".to_owned(),
            });
        }
        (None, None) => {}
    }
    if let Some(token) = token {
        return Ok(NatsAuth::Token(token.value));
    }
    if let Some(nkey) = nkey {
        if !nkey.value.expose().starts_with("SU") {
            return Err(ConfigError::Invalid {
                setting: cx.setting(keys::NATS_NKEY_SEED.key, nkey.origin.as_ref()),
                expected: "a user NKey seed (it starts with SU)".to_owned(),
                found: "something else (not shown)".to_owned(),
            });
        }
        return Ok(NatsAuth::NKey(nkey.value));
    }
    if let Some(creds) = creds_file {
        return Ok(NatsAuth::CredsFile(creds.value));
    }
    Ok(NatsAuth::None)
}

/// A stream, consumer or bucket name: letters, digits, `-` and `_` (NATS
/// also refuses `.`, `*`, `>`, spaces and path separators in them).
fn stream_name(
    cx: &mut Context<'_>,
    key: &Key,
    raw: Option<Sourced<String>>,
    default: &str,
) -> Result<String, ConfigError> {
    let name = cx.text(key.key, raw, default);
    let valid = !name.value.is_empty()
        && name.value.len() <= 64
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(cx.invalid(
            key.key,
            name.origin.as_ref(),
            "1 to 64 ASCII letters, digits, - or _",
            format!("{:?}", name.value),
        ));
    }
    Ok(name.value)
}

fn is_subject_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// A URL whose traffic is not encrypted.
fn is_plain(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("ws://")
}
