//! Validation of the cohort import's settings, `[cohorts]` (the webhook, the
//! identity rule, the writer, the pull schedule) and `[braze]` (the REST
//! connection and the partner keys), into a [`CohortsConfig`].
//!
//! The checks that span keys live here too: webhook credentials next to
//! `webhook_allow_unauthenticated`, the keys the partner writer needs, the
//! email identity the partner API cannot take, and a Braze REST API key
//! whenever the import is on with the attribute writer outside dry run. A
//! Braze key set while the import is off is fine: the `cohorts` commands
//! use it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cohort_import::braze::{Instance, RateLimit};
use cohort_import::identity::IdentityRule;
use cohort_import::writer::DEFAULT_ATTRIBUTE;
use mixpanel_client::Secret;

use super::keys::{self, Key};
use super::raw::{RawBraze, RawCohorts, SecretList, Sourced};
use super::validate::{Context, Valued, read_setting_file};
use super::{
    BrazeConfig, CohortWebhookConfig, CohortWriter, CohortsConfig, ConfigError, PullSchedule,
};

/// The paths the bridge serves itself: the webhook cannot take one.
const RESERVED_PATHS: [&str; 5] = ["/currents", "/healthz", "/readyz", "/status", "/metrics"];

/// The names Braze reserves in a `/users/track` attributes object.
const RESERVED_ATTRIBUTES: [&str; 5] = [
    "external_id",
    "email",
    "_update_existing_only",
    "user_alias",
    "braze_id",
];

/// The longest custom attribute name Braze accepts, in bytes.
const MAX_ATTRIBUTE_BYTES: usize = 255;

/// What a webhook credential looks like, for error messages.
const CREDENTIAL: &str = "user:password credentials with a non-empty user and password";

/// The webhook credentials accepted, and the setting that gave them.
struct WebhookCredentials {
    secrets: Vec<Secret>,
    setting: String,
}

pub(super) fn validate_cohorts(
    cx: &mut Context<'_>,
    cohorts: RawCohorts,
    braze: RawBraze,
    listen: SocketAddr,
    dry_run: bool,
) -> Result<CohortsConfig, ConfigError> {
    let path = validate_webhook_path(cx, cohorts.webhook_path)?;
    let credentials = validate_credentials(
        cx,
        cohorts.webhook_credentials,
        cohorts.webhook_credentials_file,
    )?;
    let allow_origin = cohorts
        .webhook_allow_unauthenticated
        .as_ref()
        .map(|allow| allow.origin.clone());
    let allow_unauthenticated = cx.bool(
        keys::COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED.key,
        cohorts.webhook_allow_unauthenticated,
    );
    let max_body_bytes = cx.int(&keys::COHORT_MAX_BODY_BYTES, cohorts.max_body_bytes)?;
    let max_members_per_page = cx.int(
        &keys::COHORT_MAX_MEMBERS_PER_PAGE,
        cohorts.max_members_per_page,
    )?;
    let allow_setting = cx.setting(
        keys::COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED.key,
        allow_origin.as_ref(),
    );
    let (credentials, webhook_setting) = match (credentials, allow_unauthenticated) {
        (Some(credentials), true) => {
            return Err(ConfigError::Conflict {
                first: allow_setting,
                second: credentials.setting,
            });
        }
        (Some(credentials), false) => (credentials.secrets, Some(credentials.setting)),
        (None, true) => {
            if !listen.ip().is_loopback() {
                return Err(cx.invalid(
                    keys::COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED.key,
                    allow_origin.as_ref(),
                    "a loopback listen address with it (it is for local tests only)",
                    listen.to_string(),
                ));
            }
            cx.warnings.push(
                "the cohort webhook accepts requests without credentials (cohorts.webhook_allow_unauthenticated): for local tests only"
                    .to_owned(),
            );
            (Vec::new(), Some(allow_setting))
        }
        (None, false) => (Vec::new(), None),
    };
    let webhook = webhook_setting.is_some().then(|| CohortWebhookConfig {
        path: path.value,
        credentials,
        max_body_bytes: usize::try_from(max_body_bytes.value).unwrap_or(usize::MAX),
        max_members_per_page: usize::try_from(max_members_per_page.value).unwrap_or(usize::MAX),
    });

    let identity_text = cx.text(
        keys::COHORT_IDENTITY.key,
        cohorts.identity,
        keys::DEFAULT_COHORT_IDENTITY,
    );
    let identity = IdentityRule::parse(&identity_text.value).ok_or_else(|| {
        cx.invalid(
            keys::COHORT_IDENTITY.key,
            identity_text.origin.as_ref(),
            "mixpanel_distinct_id, email or property:<name>",
            format!("{:?}", identity_text.value),
        )
    })?;
    let writer_text = cx.text(
        keys::COHORT_WRITER.key,
        cohorts.writer,
        keys::DEFAULT_COHORT_WRITER,
    );
    let partner = match writer_text.value.to_ascii_lowercase().as_str() {
        "attribute" => false,
        "partner" => true,
        _ => {
            return Err(cx.invalid(
                keys::COHORT_WRITER.key,
                writer_text.origin.as_ref(),
                "attribute or partner",
                format!("{:?}", writer_text.value),
            ));
        }
    };
    let attribute = validate_attribute(cx, cohorts.attribute)?;
    let pull = validate_pull(cx, cohorts.pull_interval_secs, cohorts.pull_cohorts)?;

    let rest_api_key = cx.secret(
        keys::BRAZE_REST_API_KEY.key,
        braze.rest_api_key,
        braze.rest_api_key_file,
    )?;
    let instance_text = cx.text(
        keys::BRAZE_INSTANCE.key,
        braze.instance,
        keys::DEFAULT_BRAZE_INSTANCE,
    );
    let instance = instance_text.value.parse::<Instance>().map_err(|_| {
        let names = Instance::ALL.map(Instance::name).join(", ");
        cx.invalid(
            keys::BRAZE_INSTANCE.key,
            instance_text.origin.as_ref(),
            &format!("a Braze instance: one of {names}"),
            format!("{:?}", instance_text.value),
        )
    })?;
    let api_url = validate_api_url(cx, braze.api_url)?;
    let partner_name = validate_partner_name(cx, braze.partner_name)?;
    let partner_api_key = cx.secret(
        keys::BRAZE_PARTNER_API_KEY.key,
        braze.partner_api_key,
        braze.partner_api_key_file,
    )?;
    let data_import_key = cx.secret(
        keys::BRAZE_DATA_IMPORT_KEY.key,
        braze.data_import_key,
        braze.data_import_key_file,
    )?;
    let rate_limit_requests =
        cx.int(&keys::BRAZE_RATE_LIMIT_REQUESTS, braze.rate_limit_requests)?;
    let rate_limit_window_secs = cx.int(
        &keys::BRAZE_RATE_LIMIT_WINDOW_SECS,
        braze.rate_limit_window_secs,
    )?;
    let request_timeout_secs = cx.int(
        &keys::BRAZE_REQUEST_TIMEOUT_SECS,
        braze.request_timeout_secs,
    )?;

    let writer = if partner {
        if identity == IdentityRule::Email {
            return Err(cx.invalid(
                keys::COHORT_IDENTITY.key,
                identity_text.origin.as_ref(),
                "mixpanel_distinct_id or property:<name> with the partner writer (Braze's partner cohort API takes external ids only)",
                format!("{:?}", identity_text.value),
            ));
        }
        let writer_setting = cx.setting(keys::COHORT_WRITER.key, writer_text.origin.as_ref());
        let needs = |missing: String| ConfigError::Needs {
            setting: writer_setting.clone(),
            value: "partner".to_owned(),
            missing,
        };
        let Some(partner_name) = partner_name else {
            return Err(needs(format!(
                "{} (or {})",
                keys::BRAZE_PARTNER_NAME.env,
                keys::BRAZE_PARTNER_NAME.key
            )));
        };
        let Some(partner_api_key) = partner_api_key else {
            return Err(needs(missing_secret(
                &keys::BRAZE_PARTNER_API_KEY,
                &keys::BRAZE_PARTNER_API_KEY_FILE,
            )));
        };
        let Some(data_import_key) = data_import_key else {
            return Err(needs(missing_secret(
                &keys::BRAZE_DATA_IMPORT_KEY,
                &keys::BRAZE_DATA_IMPORT_KEY_FILE,
            )));
        };
        CohortWriter::Partner {
            partner_name: partner_name.value,
            partner_api_key: partner_api_key.value,
            data_import_key: data_import_key.value,
        }
    } else {
        CohortWriter::Attribute {
            attribute: attribute.value,
        }
    };

    let import_setting = webhook_setting.or(pull.as_ref().map(|(_, setting)| setting.clone()));
    if let Some(setting) = import_setting
        && !partner
        && !dry_run
        && rest_api_key.is_none()
    {
        return Err(ConfigError::NoBrazeKey { setting });
    }

    let braze = (rest_api_key.is_some() || partner).then(|| BrazeConfig {
        rest_api_key: rest_api_key.map(|key| key.value),
        instance,
        api_url: api_url.as_ref().map(|url| url.value.clone()),
        rate_limit: RateLimit {
            max_requests: u32::try_from(rate_limit_requests.value).unwrap_or(u32::MAX),
            window: Duration::from_secs(rate_limit_window_secs.value),
        },
        request_timeout: Duration::from_secs(request_timeout_secs.value),
    });
    if braze.is_some()
        && let Some(api_url) = &api_url
        && api_url.value.starts_with("http://")
        && !is_loopback_url(&api_url.value)
    {
        let setting = cx.setting(keys::BRAZE_API_URL.key, api_url.origin.as_ref());
        cx.warnings.push(format!(
            "{setting} is plain http to a host other than loopback: the Braze API keys travel in clear text"
        ));
    }

    Ok(CohortsConfig {
        webhook,
        identity,
        writer,
        braze,
        pull: pull.map(|(pull, _)| pull),
    })
}

/// `BRAZE_PARTNER_API_KEY (or braze.partner_api_key or braze.partner_api_key_file)`.
fn missing_secret(key: &Key, file_key: &Key) -> String {
    format!("{} (or {} or {})", key.env, key.key, file_key.key)
}

/// The webhook's path: absolute, no query, fragment, space or route
/// metacharacter, and none of the bridge's own paths.
fn validate_webhook_path(
    cx: &mut Context<'_>,
    raw: Option<Sourced<String>>,
) -> Result<Valued<String>, ConfigError> {
    let key = keys::COHORT_WEBHOOK_PATH.key;
    let path = cx.text(key, raw, keys::DEFAULT_COHORT_WEBHOOK_PATH);
    let has_bad_char = path.value.chars().any(|c| {
        matches!(c, '?' | '#' | '*' | ':' | '{' | '}') || c.is_whitespace() || c.is_control()
    });
    if !path.value.starts_with('/') || has_bad_char {
        return Err(cx.invalid(
            key,
            path.origin.as_ref(),
            "a path starting with / without ?, #, *, :, {, } or spaces",
            format!("{:?}", path.value),
        ));
    }
    if RESERVED_PATHS.contains(&path.value.as_str()) {
        return Err(cx.invalid(
            key,
            path.origin.as_ref(),
            "a path other than the bridge's own (/currents, /healthz, /readyz, /status, /metrics)",
            format!("{:?}", path.value),
        ));
    }
    Ok(path)
}

/// The webhook credentials, from the list or from its file (not both).
/// Messages never show a credential.
fn validate_credentials(
    cx: &mut Context<'_>,
    list: Option<Sourced<SecretList>>,
    file: Option<Sourced<PathBuf>>,
) -> Result<Option<WebhookCredentials>, ConfigError> {
    let key = keys::COHORT_WEBHOOK_CREDENTIALS.key;
    let file_key = keys::COHORT_WEBHOOK_CREDENTIALS_FILE.key;
    let mut secrets: Vec<Secret> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut push = |pair: &str, note: String| {
        if !secrets.iter().any(|seen| seen.expose() == pair) {
            secrets.push(Secret::new(pair));
            notes.push(note);
        }
    };
    let setting = match (list, file) {
        (Some(list), Some(file)) => {
            return Err(ConfigError::Conflict {
                first: cx.setting(key, Some(&list.origin)),
                second: cx.setting(file_key, Some(&file.origin)),
            });
        }
        (Some(list), None) => {
            cx.record(key, &list.origin);
            if list.value.0.is_empty() {
                return Err(cx.invalid(
                    key,
                    Some(&list.origin),
                    "at least one user:password (leave the key out to turn the webhook off)",
                    "none".to_owned(),
                ));
            }
            let note = cx.note(&list.origin);
            for pair in &list.value.0 {
                let pair = pair.expose().trim();
                if let Some(problem) = credential_problem(pair) {
                    return Err(cx.invalid(
                        key,
                        Some(&list.origin),
                        CREDENTIAL,
                        problem.to_owned(),
                    ));
                }
                push(pair, note.clone());
            }
            cx.setting(key, Some(&list.origin))
        }
        (None, Some(file)) => {
            cx.record(file_key, &file.origin);
            let setting = cx.setting(file_key, Some(&file.origin));
            let text = read_setting_file(&setting, &file.value)?;
            let mut n_credentials = 0;
            for (line_idx, line) in text.lines().enumerate() {
                let pair = line.trim();
                if pair.is_empty() || pair.starts_with('#') {
                    continue;
                }
                let line_note = format!("{} line {}", file.value.display(), line_idx + 1);
                if let Some(problem) = credential_problem(pair) {
                    return Err(ConfigError::Invalid {
                        setting: format!("{setting} ({line_note})"),
                        expected: CREDENTIAL.to_owned(),
                        found: problem.to_owned(),
                    });
                }
                n_credentials += 1;
                push(pair, line_note);
            }
            if n_credentials == 0 {
                return Err(ConfigError::Invalid {
                    setting: format!("{setting} ({})", file.value.display()),
                    expected: "at least one user:password, one per line".to_owned(),
                    found: "none".to_owned(),
                });
            }
            cx.provenance.credentials_file = Some(file.value);
            setting
        }
        (None, None) => return Ok(None),
    };
    cx.provenance.credential_notes = notes;
    Ok(Some(WebhookCredentials { secrets, setting }))
}

/// What is wrong with a `user:password` credential, without showing it.
fn credential_problem(pair: &str) -> Option<&'static str> {
    if pair.is_empty() {
        return Some("an empty credential");
    }
    if pair.chars().any(char::is_control) {
        return Some("a credential with a control character");
    }
    let Some((user, password)) = pair.split_once(':') else {
        return Some("a credential without ':'");
    };
    if user.is_empty() {
        return Some("a credential with an empty user");
    }
    if password.is_empty() {
        return Some("a credential with an empty password");
    }
    None
}

/// The attribute writer's attribute: a custom attribute name Braze accepts.
fn validate_attribute(
    cx: &mut Context<'_>,
    raw: Option<Sourced<String>>,
) -> Result<Valued<String>, ConfigError> {
    let key = keys::COHORT_ATTRIBUTE.key;
    let attribute = cx.text(key, raw, DEFAULT_ATTRIBUTE);
    let name = attribute.value.as_str();
    let found = if name.is_empty() {
        Some("an empty string".to_owned())
    } else if name.len() > MAX_ATTRIBUTE_BYTES {
        Some(format!("a name of {} bytes", name.len()))
    } else if name.starts_with('$') || RESERVED_ATTRIBUTES.contains(&name) {
        Some(format!("{name:?}"))
    } else {
        None
    };
    if let Some(found) = found {
        return Err(cx.invalid(
            key,
            attribute.origin.as_ref(),
            &format!(
                "a custom attribute name of 1 to {MAX_ATTRIBUTE_BYTES} bytes, not starting with $ and other than {}",
                RESERVED_ATTRIBUTES.join(", ")
            ),
            found,
        ));
    }
    Ok(attribute)
}

/// The pull schedule, with the setting that turned it on; `pull_cohorts`
/// alone is a warning.
fn validate_pull(
    cx: &mut Context<'_>,
    interval: Option<Sourced<u64>>,
    cohort_ids: Option<Sourced<Vec<u64>>>,
) -> Result<Option<(PullSchedule, String)>, ConfigError> {
    let interval = cx.optional_int(&keys::COHORT_PULL_INTERVAL_SECS, interval)?;
    let cohort_ids = cohort_ids.map(|ids| {
        cx.record(keys::COHORT_PULL_COHORTS.key, &ids.origin);
        let mut unique: Vec<u64> = Vec::with_capacity(ids.value.len());
        for id in ids.value {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        Valued {
            value: unique,
            origin: Some(ids.origin),
        }
    });
    let Some(interval) = interval else {
        if let Some(ids) = cohort_ids {
            let setting = cx.setting(keys::COHORT_PULL_COHORTS.key, ids.origin.as_ref());
            cx.warnings.push(format!(
                "{setting} is set but unused: there is no pull schedule without {} ({})",
                keys::COHORT_PULL_INTERVAL_SECS.key,
                keys::COHORT_PULL_INTERVAL_SECS.env
            ));
        }
        return Ok(None);
    };
    let setting = cx.setting(
        keys::COHORT_PULL_INTERVAL_SECS.key,
        interval.origin.as_ref(),
    );
    let schedule = PullSchedule {
        cohort_ids: cohort_ids.map(|ids| ids.value).unwrap_or_default(),
        interval: Duration::from_secs(interval.value),
    };
    Ok(Some((schedule, setting)))
}

/// `braze.api_url`: an http:// or https:// base URL, as `mixpanel.api_url`.
fn validate_api_url(
    cx: &mut Context<'_>,
    raw: Option<Sourced<String>>,
) -> Result<Option<Valued<String>>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let key = keys::BRAZE_API_URL.key;
    let url = cx.text(key, Some(raw), "");
    let is_http = url.value.starts_with("http://") || url.value.starts_with("https://");
    if !is_http || url.value.contains(char::is_whitespace) {
        return Err(cx.invalid(
            key,
            url.origin.as_ref(),
            "an http:// or https:// URL",
            format!("{:?}", url.value),
        ));
    }
    Ok(Some(url))
}

/// `braze.partner_name`: the path segment Braze assigned, `[A-Za-z0-9_-]+`.
fn validate_partner_name(
    cx: &mut Context<'_>,
    raw: Option<Sourced<String>>,
) -> Result<Option<Valued<String>>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let key = keys::BRAZE_PARTNER_NAME.key;
    let name = cx.text(key, Some(raw), "");
    let is_valid = !name.value.is_empty()
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !is_valid {
        return Err(cx.invalid(
            key,
            name.origin.as_ref(),
            "a partner name of letters, digits, - and _",
            format!("{:?}", name.value),
        ));
    }
    Ok(Some(name))
}

/// Whether an http(s) URL's host is `localhost` or a loopback address.
pub(super) fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
