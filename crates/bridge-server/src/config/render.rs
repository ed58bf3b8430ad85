//! The effective configuration as TOML for `check-config`: every key with
//! its value and, in a comment, where it came from (`default`, a variable,
//! a flag or `file:line`). Secrets print as `"[redacted] (from <source>)"`:
//! the value is never read here, only the notes of where it came from.

use std::fmt::Write as _;

use mixpanel_client::{Credentials, Region};

use super::{CohortWriter, Config, IngestAuth, ProjectConfig, SpoolBackend, keys};
use crate::nats::{NatsAuth, NatsOptions};

pub(super) fn render(config: &Config) -> String {
    let mut out = Renderer {
        config,
        text: String::new(),
    };
    out.comment("The effective configuration of braze-mixpanel-bridge: defaults, then the");
    out.comment("config file, the environment and flags. Secrets are redacted.");
    match config.config_file() {
        Some(path) => out.comment(&format!("Config file: {}", path.display())),
        None => out.comment("Config file: none"),
    }
    out.value(
        keys::LISTEN.key,
        "listen",
        &quote(&config.listen.to_string()),
    );
    match config.ops {
        crate::config::OpsListener::Address(address) => out.value(
            keys::OPS_LISTEN.key,
            "ops_listen",
            &quote(&address.to_string()),
        ),
        crate::config::OpsListener::IngestListener => out.value(
            keys::OPS_ON_INGEST_LISTENER.key,
            "ops_on_ingest_listener",
            "true",
        ),
    }
    if let Some(extra_ca) = &config.extra_ca {
        out.value(
            keys::EXTRA_CA_FILE.key,
            "extra_ca_file",
            &quote(&extra_ca.path.display().to_string()),
        );
    }
    out.value(
        keys::DATA_DIR.key,
        "data_dir",
        &quote(&config.data_dir.display().to_string()),
    );
    out.value(keys::DRY_RUN.key, "dry_run", &config.dry_run.to_string());
    out.value(
        keys::LOG_FORMAT.key,
        "log_format",
        &quote(config.log_format.as_str()),
    );

    if let Some(tls) = &config.tls {
        out.table("tls");
        out.value(
            keys::TLS_CERT_FILE.key,
            "cert_file",
            &quote(&tls.cert_file.display().to_string()),
        );
        out.value(
            keys::TLS_KEY_FILE.key,
            "key_file",
            &quote(&tls.key_file.display().to_string()),
        );
    }

    out.table("ingest");
    match &config.ingest.auth {
        IngestAuth::Tokens(_) => {
            out.line("tokens = [");
            for note in &config.provenance.token_notes {
                out.line(&format!("  {},", redacted(note)));
            }
            out.line("]");
        }
        IngestAuth::Unauthenticated => out.line("tokens = []"),
    }
    if let (Some(path), Some(note)) = (
        &config.provenance.tokens_file,
        config.provenance.notes.get(keys::TOKENS_FILE.key),
    ) {
        out.line(&format!(
            "tokens_file = {}  # from {note}; its tokens are listed above",
            quote(&path.display().to_string())
        ));
    }
    out.value(
        keys::ALLOW_UNAUTHENTICATED.key,
        "allow_unauthenticated",
        &(config.ingest.auth == IngestAuth::Unauthenticated).to_string(),
    );
    out.value(
        keys::MAX_BODY_BYTES.key,
        "max_body_bytes",
        &config.ingest.max_body_bytes.to_string(),
    );
    out.value(
        keys::INGEST_REQUEST_TIMEOUT_SECS.key,
        "request_timeout_secs",
        &config.ingest.request_timeout.as_secs().to_string(),
    );
    out.value(
        keys::MAX_EVENTS_PER_BATCH.key,
        "max_events_per_batch",
        &config.ingest.max_events_per_batch.to_string(),
    );
    out.value(
        keys::MAX_INFLIGHT_BODY_BYTES.key,
        "max_inflight_body_bytes",
        &config.ingest.max_inflight_body_bytes.to_string(),
    );
    out.value(
        keys::HEADER_READ_TIMEOUT_SECS.key,
        "header_read_timeout_secs",
        &config.ingest.header_read_timeout.as_secs().to_string(),
    );
    out.value(
        keys::MAX_CONNECTIONS.key,
        "max_connections",
        &config.ingest.max_connections.to_string(),
    );
    out.value(
        keys::SHUTDOWN_GRACE_SECS.key,
        "shutdown_grace_secs",
        &config.ingest.shutdown_grace.as_secs().to_string(),
    );

    out.table("spool");
    let backend = match config.spool.backend {
        SpoolBackend::Sqlite => "sqlite",
        SpoolBackend::Nats(_) => "nats",
    };
    out.value(keys::SPOOL_BACKEND.key, "backend", &quote(backend));
    out.value(
        keys::SPOOL_MAX_BYTES.key,
        "max_bytes",
        &config.spool.max_bytes.to_string(),
    );
    if let SpoolBackend::Nats(nats) = &config.spool.backend {
        out.nats(nats);
    }

    let delivery = &config.delivery;
    out.table("delivery");
    for (key, name, value) in [
        (keys::WORKERS, "workers", delivery.workers as u64),
        (
            keys::CONCURRENCY,
            "concurrency",
            delivery.concurrency as u64,
        ),
        (
            keys::LINGER_MS,
            "linger_ms",
            u64::try_from(delivery.linger.as_millis()).unwrap_or(u64::MAX),
        ),
        (keys::LEASE_SECS, "lease_secs", delivery.lease.as_secs()),
        (
            keys::DELIVERY_REQUEST_TIMEOUT_SECS,
            "request_timeout_secs",
            delivery.request_timeout.as_secs(),
        ),
        (
            keys::MAX_RETRIES,
            "max_retries",
            u64::from(delivery.retry.max_retries),
        ),
        (
            keys::RETRY_INITIAL_BACKOFF_SECS,
            "retry_initial_backoff_secs",
            delivery.retry.initial_delay.as_secs(),
        ),
        (
            keys::RETRY_MAX_BACKOFF_SECS,
            "retry_max_backoff_secs",
            delivery.retry.max_delay.as_secs(),
        ),
        (
            keys::MAX_BATCH_EVENTS,
            "max_batch_events",
            delivery.batch_limits.max_events as u64,
        ),
        (
            keys::MAX_BATCH_BYTES,
            "max_batch_bytes",
            delivery.batch_limits.max_bytes as u64,
        ),
        (
            keys::MAX_ATTEMPTS,
            "max_attempts",
            u64::from(delivery.max_attempts),
        ),
        (
            keys::MAX_AGE_SECS,
            "max_age_secs",
            delivery.max_age.as_secs(),
        ),
    ] {
        out.value(key.key, name, &value.to_string());
    }

    out.table("archive");
    match &config.archive {
        Some(archive) => out.value(keys::ARCHIVE_URL.key, "url", &quote(&archive.url)),
        None => out.comment("url: none (no archive: a batch is not kept once delivered)"),
    }

    out.table("mapping");
    match &config.provenance.include_types {
        Some(include) => out.value(keys::INCLUDE_TYPES.key, "include_types", &list(include)),
        None => out.comment("include_types: every type (default)"),
    }
    out.value(
        keys::EXCLUDE_TYPES.key,
        "exclude_types",
        &list(&config.provenance.exclude_types),
    );

    out.table("mixpanel");
    out.comment("Project \"default\": every batch no [[projects]] entry claims.");
    out.project(&config.default_project, "mixpanel");
    for project in &config.projects {
        out.line("");
        out.line("[[projects]]");
        let prefix = format!("projects.{}", project.name);
        out.value(&format!("{prefix}.name"), "name", &quote(&project.name));
        out.value(
            &format!("{prefix}.workspaces"),
            "workspaces",
            &list(&project.workspaces),
        );
        out.value(
            &format!("{prefix}.app_group_ids"),
            "app_group_ids",
            &list(&project.app_group_ids),
        );
        out.project(project, &prefix);
    }
    out.cohorts();
    out.braze();
    out.text
}

struct Renderer<'a> {
    config: &'a Config,
    text: String,
}

impl Renderer<'_> {
    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn comment(&mut self, comment: &str) {
        let _ = writeln!(self.text, "# {comment}");
    }

    fn table(&mut self, name: &str) {
        let _ = write!(self.text, "\n[{name}]\n");
    }

    /// `name = value  # source`, the source being `default` when unset.
    fn value(&mut self, key: &str, name: &str, value: &str) {
        let source = match self.config.provenance.notes.get(key) {
            Some(note) => format!("from {note}"),
            None => "default".to_owned(),
        };
        let _ = writeln!(self.text, "{name} = {value}  # {source}");
    }

    /// A secret: only where it came from.
    fn secret(&mut self, key: &str, name: &str) {
        let note = self
            .config
            .provenance
            .notes
            .get(key)
            .map_or("an unknown source", String::as_str);
        let _ = writeln!(self.text, "{name} = {}", redacted(note));
    }

    fn project(&mut self, project: &ProjectConfig, prefix: &str) {
        let key = |field: &str| format!("{prefix}.{field}");
        match &project.credentials {
            Some(Credentials::ServiceAccount {
                username,
                project_id,
                ..
            }) => {
                self.comment("Credentials in use: the service account.");
                self.value(&key("project_id"), "project_id", &quote(project_id));
                self.value(
                    &key("service_account_username"),
                    "service_account_username",
                    &quote(username),
                );
                self.secret(&key("service_account_secret"), "service_account_secret");
            }
            Some(Credentials::ApiSecret { project_id, .. }) => {
                self.comment("Credentials in use: the API secret (deprecated by Mixpanel).");
                if let Some(project_id) = project_id {
                    self.value(&key("project_id"), "project_id", &quote(project_id));
                }
                self.secret(&key("api_secret"), "api_secret");
            }
            Some(Credentials::ProjectToken { .. }) => {
                self.comment("Credentials in use: the project token.");
            }
            Some(_) => self.comment("Credentials in use: other."),
            None => {
                let path = self.config.dry_run_path(project);
                self.comment(&format!(
                    "Credentials in use: none (dry run: events go to {}).",
                    path.display()
                ));
            }
        }
        if project.project_token.is_some() {
            self.secret(&key("project_token"), "project_token");
        }
        self.value(
            &key("region"),
            "region",
            &quote(region_name(project.region)),
        );
        match &project.api_url {
            Some(api_url) => self.value(&key("api_url"), "api_url", &quote(api_url)),
            None => self.comment(&format!(
                "api_url: {} (the region's host)",
                project.base_url()
            )),
        }
    }
}

impl Renderer<'_> {
    /// `[cohorts]`: the webhook's keys only when it is on, the pull
    /// schedule's only when it is set.
    fn cohorts(&mut self) {
        let cohorts = &self.config.cohorts;
        let provenance = &self.config.provenance;
        self.table("cohorts");
        match &cohorts.webhook {
            Some(webhook) => {
                self.comment(&format!("The webhook is on: POST {}.", webhook.path));
                self.value(
                    keys::COHORT_WEBHOOK_PATH.key,
                    "webhook_path",
                    &quote(&webhook.path),
                );
                if webhook.credentials.is_empty() {
                    self.line("webhook_credentials = []");
                } else {
                    self.line("webhook_credentials = [");
                    for note in &provenance.credential_notes {
                        self.line(&format!("  {},", redacted(note)));
                    }
                    self.line("]");
                }
                if let (Some(path), Some(note)) = (
                    &provenance.credentials_file,
                    provenance
                        .notes
                        .get(keys::COHORT_WEBHOOK_CREDENTIALS_FILE.key),
                ) {
                    self.line(&format!(
                        "webhook_credentials_file = {}  # from {note}; its credentials are listed above",
                        quote(&path.display().to_string())
                    ));
                }
                self.value(
                    keys::COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED.key,
                    "webhook_allow_unauthenticated",
                    &webhook.credentials.is_empty().to_string(),
                );
                self.value(
                    keys::COHORT_MAX_BODY_BYTES.key,
                    "max_body_bytes",
                    &webhook.max_body_bytes.to_string(),
                );
                self.value(
                    keys::COHORT_MAX_MEMBERS_PER_PAGE.key,
                    "max_members_per_page",
                    &webhook.max_members_per_page.to_string(),
                );
            }
            None => self.comment(
                "The webhook is off: no webhook_credentials and not webhook_allow_unauthenticated.",
            ),
        }
        self.value(
            keys::COHORT_IDENTITY.key,
            "identity",
            &quote(&cohorts.identity.as_config()),
        );
        match &cohorts.writer {
            CohortWriter::Attribute { attribute } => {
                self.value(keys::COHORT_WRITER.key, "writer", &quote("attribute"));
                self.value(keys::COHORT_ATTRIBUTE.key, "attribute", &quote(attribute));
            }
            CohortWriter::Partner { .. } => {
                self.value(keys::COHORT_WRITER.key, "writer", &quote("partner"));
                self.comment("attribute: unused by the partner writer");
            }
        }
        match &cohorts.pull {
            Some(pull) => {
                self.value(
                    keys::COHORT_PULL_INTERVAL_SECS.key,
                    "pull_interval_secs",
                    &pull.interval.as_secs().to_string(),
                );
                if pull.cohort_ids.is_empty() {
                    self.comment("pull_cohorts: every cohort of the default project");
                } else {
                    let ids: Vec<String> = pull.cohort_ids.iter().map(u64::to_string).collect();
                    self.value(
                        keys::COHORT_PULL_COHORTS.key,
                        "pull_cohorts",
                        &format!("[{}]", ids.join(", ")),
                    );
                }
            }
            None => self.comment("pull_interval_secs: none (no pull schedule)"),
        }
    }

    /// `[braze]`: the connection when there is one, the partner keys with
    /// the partner writer.
    fn braze(&mut self) {
        let cohorts = &self.config.cohorts;
        self.table("braze");
        let Some(braze) = &cohorts.braze else {
            self.comment(
                "No Braze connection: no REST API key (braze.rest_api_key), and the attribute writer.",
            );
            return;
        };
        match &braze.rest_api_key {
            Some(_) => self.secret(keys::BRAZE_REST_API_KEY.key, "rest_api_key"),
            None => self.comment("rest_api_key: none (the partner writer needs none)"),
        }
        self.value(
            keys::BRAZE_INSTANCE.key,
            "instance",
            &quote(braze.instance.name()),
        );
        match &braze.api_url {
            Some(api_url) => self.value(keys::BRAZE_API_URL.key, "api_url", &quote(api_url)),
            None => self.comment(&format!(
                "api_url: {} (the instance's endpoint)",
                braze.instance.rest_url()
            )),
        }
        if let CohortWriter::Partner { partner_name, .. } = &cohorts.writer {
            self.value(
                keys::BRAZE_PARTNER_NAME.key,
                "partner_name",
                &quote(partner_name),
            );
            self.secret(keys::BRAZE_PARTNER_API_KEY.key, "partner_api_key");
            self.secret(keys::BRAZE_DATA_IMPORT_KEY.key, "data_import_key");
        }
        self.value(
            keys::BRAZE_RATE_LIMIT_REQUESTS.key,
            "rate_limit_requests",
            &braze.rate_limit.max_requests.to_string(),
        );
        self.value(
            keys::BRAZE_RATE_LIMIT_WINDOW_SECS.key,
            "rate_limit_window_secs",
            &braze.rate_limit.window.as_secs().to_string(),
        );
        self.value(
            keys::BRAZE_REQUEST_TIMEOUT_SECS.key,
            "request_timeout_secs",
            &braze.request_timeout.as_secs().to_string(),
        );
    }
}

impl Renderer<'_> {
    /// `[nats]`, when the spool is NATS.
    fn nats(&mut self, nats: &NatsOptions) {
        self.table("nats");
        self.value(keys::NATS_SERVERS.key, "servers", &list(&nats.servers));
        match &nats.auth {
            NatsAuth::None => self.comment("No NATS credentials."),
            NatsAuth::UserPassword { user, .. } => {
                self.value(keys::NATS_USER.key, "user", &quote(user));
                self.secret(keys::NATS_PASSWORD.key, "password");
            }
            NatsAuth::Token(_) => self.secret(keys::NATS_TOKEN.key, "token"),
            NatsAuth::NKey(_) => self.secret(keys::NATS_NKEY_SEED.key, "nkey_seed"),
            NatsAuth::CredsFile(path) => self.value(
                keys::NATS_CREDS_FILE.key,
                "creds_file",
                &quote(&path.display().to_string()),
            ),
        }
        if let Some(path) = &nats.tls_ca_file {
            self.value(
                keys::NATS_TLS_CA_FILE.key,
                "tls_ca_file",
                &quote(&path.display().to_string()),
            );
        }
        self.value(
            keys::NATS_TLS_REQUIRED.key,
            "tls_required",
            &nats.tls_required.to_string(),
        );
        for (key, name, value) in [
            (keys::NATS_STREAM, "stream", &nats.stream),
            (
                keys::NATS_SUBJECT_PREFIX,
                "subject_prefix",
                &nats.subject_prefix,
            ),
            (keys::NATS_CONSUMER, "consumer", &nats.consumer),
            (
                keys::NATS_DEAD_LETTER_STREAM,
                "dead_letter_stream",
                &nats.dead_letter_stream,
            ),
            (
                keys::NATS_KV_BUCKET_PREFIX,
                "kv_bucket_prefix",
                &nats.kv_bucket_prefix,
            ),
        ] {
            self.value(key.key, name, &quote(value));
        }
        for (key, name, value) in [
            (keys::NATS_REPLICAS, "replicas", nats.replicas as u64),
            (
                keys::NATS_DUPLICATE_WINDOW_SECS,
                "duplicate_window_secs",
                nats.duplicate_window.as_secs(),
            ),
            (
                keys::NATS_PUBLISH_TIMEOUT_MS,
                "publish_timeout_ms",
                u64::try_from(nats.publish_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            (
                keys::NATS_CONNECT_TIMEOUT_SECS,
                "connect_timeout_secs",
                nats.connect_timeout.as_secs(),
            ),
        ] {
            self.value(key.key, name, &value.to_string());
        }
    }
}

fn region_name(region: Region) -> &'static str {
    match region {
        Region::Us => "us",
        Region::Eu => "eu",
        Region::In => "in",
    }
}

fn redacted(note: &str) -> String {
    quote(&format!("[redacted] (from {note})"))
}

/// A TOML basic string. JSON's escapes are all valid TOML escapes.
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}
