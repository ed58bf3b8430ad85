//! The keys of the configuration: each one's dotted name in the file, its
//! environment variable and, for integers, its bounds and default. One
//! table, read by the raw stage (which variable sets what), the validation
//! (bounds, defaults) and the rendering; `docs/configuration.md` documents
//! each entry.

/// A key and the environment variable that overrides it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// The dotted key in the file (`ingest.max_body_bytes`).
    pub(crate) key: &'static str,
    /// The variable (`BRIDGE_MAX_BODY_BYTES`).
    pub(crate) env: &'static str,
}

/// An integer key, with its bounds and default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntKey {
    pub(crate) key: &'static str,
    pub(crate) env: &'static str,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) default: u64,
}

impl IntKey {
    /// What a valid value looks like, for error messages.
    pub(crate) fn expected(&self) -> String {
        match (self.min, self.max) {
            (0, u64::MAX) => "a non-negative integer".to_owned(),
            (1, u64::MAX) => "a positive integer".to_owned(),
            (min, u64::MAX) => format!("an integer of at least {min}"),
            (min, max) => format!("an integer from {min} to {max}"),
        }
    }
}

/// The default of `listen`.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default of `data_dir`.
pub(crate) const DEFAULT_DATA_DIR: &str = "./bridge-data";

pub(crate) const LISTEN: Key = Key {
    key: "listen",
    env: "BRIDGE_LISTEN",
};
/// The default of `ops_listen`.
pub(crate) const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9090";
pub(crate) const OPS_LISTEN: Key = Key {
    key: "ops_listen",
    env: "BRIDGE_OPS_LISTEN",
};
pub(crate) const OPS_ON_INGEST_LISTENER: Key = Key {
    key: "ops_on_ingest_listener",
    env: "BRIDGE_OPS_ON_INGEST_LISTENER",
};
pub(crate) const TLS_CERT_FILE: Key = Key {
    key: "tls.cert_file",
    env: "BRIDGE_TLS_CERT_FILE",
};
pub(crate) const TLS_KEY_FILE: Key = Key {
    key: "tls.key_file",
    env: "BRIDGE_TLS_KEY_FILE",
};
pub(crate) const EXTRA_CA_FILE: Key = Key {
    key: "extra_ca_file",
    env: "BRIDGE_EXTRA_CA_FILE",
};
pub(crate) const DATA_DIR: Key = Key {
    key: "data_dir",
    env: "BRIDGE_DATA_DIR",
};
pub(crate) const DRY_RUN: Key = Key {
    key: "dry_run",
    env: "BRIDGE_DRY_RUN",
};
pub(crate) const LOG_FORMAT: Key = Key {
    key: "log_format",
    env: "BRIDGE_LOG_FORMAT",
};
pub(crate) const TOKENS: Key = Key {
    key: "ingest.tokens",
    env: "BRIDGE_CURRENTS_TOKENS",
};
pub(crate) const TOKENS_FILE: Key = Key {
    key: "ingest.tokens_file",
    env: "BRIDGE_CURRENTS_TOKENS_FILE",
};
pub(crate) const ALLOW_UNAUTHENTICATED: Key = Key {
    key: "ingest.allow_unauthenticated",
    env: "BRIDGE_ALLOW_UNAUTHENTICATED",
};
pub(crate) const MAX_BODY_BYTES: IntKey = IntKey {
    key: "ingest.max_body_bytes",
    env: "BRIDGE_MAX_BODY_BYTES",
    min: 1,
    max: u64::MAX,
    default: 16 * 1024 * 1024,
};
pub(crate) const INGEST_REQUEST_TIMEOUT_SECS: IntKey = IntKey {
    key: "ingest.request_timeout_secs",
    env: "BRIDGE_REQUEST_TIMEOUT_SECS",
    min: 1,
    max: u64::MAX,
    default: 30,
};
pub(crate) const MAX_EVENTS_PER_BATCH: IntKey = IntKey {
    key: "ingest.max_events_per_batch",
    env: "BRIDGE_MAX_EVENTS_PER_BATCH",
    min: 1,
    max: 1_000_000,
    default: 1000,
};
pub(crate) const MAX_INFLIGHT_BODY_BYTES: IntKey = IntKey {
    key: "ingest.max_inflight_body_bytes",
    env: "BRIDGE_MAX_INFLIGHT_BODY_BYTES",
    min: 1,
    max: u64::MAX,
    default: 64 * 1024 * 1024,
};
pub(crate) const HEADER_READ_TIMEOUT_SECS: IntKey = IntKey {
    key: "ingest.header_read_timeout_secs",
    env: "BRIDGE_HEADER_READ_TIMEOUT_SECS",
    min: 1,
    max: 3600,
    default: 10,
};
pub(crate) const MAX_CONNECTIONS: IntKey = IntKey {
    key: "ingest.max_connections",
    env: "BRIDGE_MAX_CONNECTIONS",
    min: 1,
    max: 1_000_000,
    default: 8192,
};
pub(crate) const SHUTDOWN_GRACE_SECS: IntKey = IntKey {
    key: "ingest.shutdown_grace_secs",
    env: "BRIDGE_SHUTDOWN_GRACE_SECS",
    min: 1,
    max: 3600,
    default: 30,
};
pub(crate) const SPOOL_MAX_BYTES: IntKey = IntKey {
    key: "spool.max_bytes",
    env: "BRIDGE_SPOOL_MAX_BYTES",
    min: 1,
    max: u64::MAX,
    default: 2 * 1024 * 1024 * 1024,
};
pub(crate) const WORKERS: IntKey = IntKey {
    key: "delivery.workers",
    env: "BRIDGE_DELIVERY_WORKERS",
    min: 1,
    max: 1024,
    default: 4,
};
pub(crate) const CONCURRENCY: IntKey = IntKey {
    key: "delivery.concurrency",
    env: "BRIDGE_DELIVERY_CONCURRENCY",
    min: 1,
    max: 1024,
    default: 10,
};
pub(crate) const LINGER_MS: IntKey = IntKey {
    key: "delivery.linger_ms",
    env: "BRIDGE_DELIVERY_LINGER_MS",
    min: 0,
    max: 60_000,
    default: 500,
};
pub(crate) const LEASE_SECS: IntKey = IntKey {
    key: "delivery.lease_secs",
    env: "BRIDGE_DELIVERY_LEASE_SECS",
    min: 1,
    max: u64::MAX,
    default: 600,
};
pub(crate) const DELIVERY_REQUEST_TIMEOUT_SECS: IntKey = IntKey {
    key: "delivery.request_timeout_secs",
    env: "BRIDGE_DELIVERY_REQUEST_TIMEOUT_SECS",
    min: 1,
    max: u64::MAX,
    default: 30,
};
pub(crate) const MAX_RETRIES: IntKey = IntKey {
    key: "delivery.max_retries",
    env: "BRIDGE_DELIVERY_MAX_RETRIES",
    min: 0,
    max: 100,
    default: 5,
};
pub(crate) const RETRY_INITIAL_BACKOFF_SECS: IntKey = IntKey {
    key: "delivery.retry_initial_backoff_secs",
    env: "BRIDGE_DELIVERY_RETRY_INITIAL_BACKOFF_SECS",
    min: 1,
    max: u64::MAX,
    default: 2,
};
pub(crate) const RETRY_MAX_BACKOFF_SECS: IntKey = IntKey {
    key: "delivery.retry_max_backoff_secs",
    env: "BRIDGE_DELIVERY_RETRY_MAX_BACKOFF_SECS",
    min: 1,
    max: u64::MAX,
    default: 60,
};
pub(crate) const MAX_ATTEMPTS: IntKey = IntKey {
    key: "delivery.max_attempts",
    env: "BRIDGE_DELIVERY_MAX_ATTEMPTS",
    min: 1,
    max: 1_000_000,
    default: 1000,
};
pub(crate) const MAX_AGE_SECS: IntKey = IntKey {
    key: "delivery.max_age_secs",
    env: "BRIDGE_DELIVERY_MAX_AGE_SECS",
    min: 60,
    max: u64::MAX,
    default: 5 * 24 * 3600,
};
pub(crate) const MAX_BATCH_EVENTS: IntKey = IntKey {
    key: "delivery.max_batch_events",
    env: "BRIDGE_DELIVERY_MAX_BATCH_EVENTS",
    min: 1,
    max: 2000,
    default: 2000,
};
pub(crate) const MAX_BATCH_BYTES: IntKey = IntKey {
    key: "delivery.max_batch_bytes",
    env: "BRIDGE_DELIVERY_MAX_BATCH_BYTES",
    min: 1,
    max: 10_000_000,
    default: 10_000_000,
};
/// `archive.url`: where `serve` archives every accepted batch (off when unset).
pub(crate) const ARCHIVE_URL: Key = Key {
    key: "archive.url",
    env: "BRIDGE_ARCHIVE_URL",
};
pub(crate) const INCLUDE_TYPES: Key = Key {
    key: "mapping.include_types",
    env: "BRIDGE_INCLUDE_TYPES",
};
pub(crate) const EXCLUDE_TYPES: Key = Key {
    key: "mapping.exclude_types",
    env: "BRIDGE_EXCLUDE_TYPES",
};

/// The default of `cohorts.webhook_path`.
pub(crate) const DEFAULT_COHORT_WEBHOOK_PATH: &str = "/mixpanel/cohorts";
/// The default of `cohorts.identity`.
pub(crate) const DEFAULT_COHORT_IDENTITY: &str = "mixpanel_distinct_id";
/// The default of `cohorts.writer`.
pub(crate) const DEFAULT_COHORT_WRITER: &str = "attribute";
/// The default of `braze.instance`.
pub(crate) const DEFAULT_BRAZE_INSTANCE: &str = "US-01";

pub(crate) const COHORT_WEBHOOK_PATH: Key = Key {
    key: "cohorts.webhook_path",
    env: "BRIDGE_COHORT_WEBHOOK_PATH",
};
pub(crate) const COHORT_WEBHOOK_CREDENTIALS: Key = Key {
    key: "cohorts.webhook_credentials",
    env: "BRIDGE_COHORT_WEBHOOK_CREDENTIALS",
};
pub(crate) const COHORT_WEBHOOK_CREDENTIALS_FILE: Key = Key {
    key: "cohorts.webhook_credentials_file",
    env: "BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE",
};
pub(crate) const COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED: Key = Key {
    key: "cohorts.webhook_allow_unauthenticated",
    env: "BRIDGE_COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED",
};
pub(crate) const COHORT_MAX_BODY_BYTES: IntKey = IntKey {
    key: "cohorts.max_body_bytes",
    env: "BRIDGE_COHORT_MAX_BODY_BYTES",
    min: 1024,
    max: u64::MAX,
    default: 8 * 1024 * 1024,
};
pub(crate) const COHORT_MAX_MEMBERS_PER_PAGE: IntKey = IntKey {
    key: "cohorts.max_members_per_page",
    env: "BRIDGE_COHORT_MAX_MEMBERS_PER_PAGE",
    min: 1,
    max: 1_000_000,
    default: 10_000,
};
pub(crate) const COHORT_IDENTITY: Key = Key {
    key: "cohorts.identity",
    env: "BRIDGE_COHORT_IDENTITY",
};
pub(crate) const COHORT_WRITER: Key = Key {
    key: "cohorts.writer",
    env: "BRIDGE_COHORT_WRITER",
};
pub(crate) const COHORT_ATTRIBUTE: Key = Key {
    key: "cohorts.attribute",
    env: "BRIDGE_COHORT_ATTRIBUTE",
};
/// Optional: absent means no pull schedule, so `default` is never used.
pub(crate) const COHORT_PULL_INTERVAL_SECS: IntKey = IntKey {
    key: "cohorts.pull_interval_secs",
    env: "BRIDGE_COHORT_PULL_INTERVAL_SECS",
    min: 60,
    max: u64::MAX,
    default: 0,
};
pub(crate) const COHORT_PULL_COHORTS: Key = Key {
    key: "cohorts.pull_cohorts",
    env: "BRIDGE_COHORT_PULL_COHORTS",
};

pub(crate) const BRAZE_REST_API_KEY: Key = Key {
    key: "braze.rest_api_key",
    env: "BRAZE_REST_API_KEY",
};
pub(crate) const BRAZE_REST_API_KEY_FILE: Key = Key {
    key: "braze.rest_api_key_file",
    env: "BRAZE_REST_API_KEY_FILE",
};
pub(crate) const BRAZE_INSTANCE: Key = Key {
    key: "braze.instance",
    env: "BRAZE_INSTANCE",
};
pub(crate) const BRAZE_API_URL: Key = Key {
    key: "braze.api_url",
    env: "BRAZE_API_URL",
};
pub(crate) const BRAZE_PARTNER_NAME: Key = Key {
    key: "braze.partner_name",
    env: "BRAZE_PARTNER_NAME",
};
pub(crate) const BRAZE_PARTNER_API_KEY: Key = Key {
    key: "braze.partner_api_key",
    env: "BRAZE_PARTNER_API_KEY",
};
pub(crate) const BRAZE_PARTNER_API_KEY_FILE: Key = Key {
    key: "braze.partner_api_key_file",
    env: "BRAZE_PARTNER_API_KEY_FILE",
};
pub(crate) const BRAZE_DATA_IMPORT_KEY: Key = Key {
    key: "braze.data_import_key",
    env: "BRAZE_DATA_IMPORT_KEY",
};
pub(crate) const BRAZE_DATA_IMPORT_KEY_FILE: Key = Key {
    key: "braze.data_import_key_file",
    env: "BRAZE_DATA_IMPORT_KEY_FILE",
};
pub(crate) const BRAZE_RATE_LIMIT_REQUESTS: IntKey = IntKey {
    key: "braze.rate_limit_requests",
    env: "BRAZE_RATE_LIMIT_REQUESTS",
    min: 1,
    max: 1_000_000,
    default: 3000,
};
pub(crate) const BRAZE_RATE_LIMIT_WINDOW_SECS: IntKey = IntKey {
    key: "braze.rate_limit_window_secs",
    env: "BRAZE_RATE_LIMIT_WINDOW_SECS",
    min: 1,
    max: 3600,
    default: 3,
};
pub(crate) const BRAZE_REQUEST_TIMEOUT_SECS: IntKey = IntKey {
    key: "braze.request_timeout_secs",
    env: "BRAZE_REQUEST_TIMEOUT_SECS",
    min: 1,
    max: u64::MAX,
    default: 30,
};

/// Every variable of `[cohorts]` and `[braze]` other than the integers
/// (those are in [`INT_KEYS`]).
pub(crate) const COHORT_KEYS: [Key; 17] = [
    COHORT_WEBHOOK_PATH,
    COHORT_WEBHOOK_CREDENTIALS,
    COHORT_WEBHOOK_CREDENTIALS_FILE,
    COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED,
    COHORT_IDENTITY,
    COHORT_WRITER,
    COHORT_ATTRIBUTE,
    COHORT_PULL_COHORTS,
    BRAZE_REST_API_KEY,
    BRAZE_REST_API_KEY_FILE,
    BRAZE_INSTANCE,
    BRAZE_API_URL,
    BRAZE_PARTNER_NAME,
    BRAZE_PARTNER_API_KEY,
    BRAZE_PARTNER_API_KEY_FILE,
    BRAZE_DATA_IMPORT_KEY,
    BRAZE_DATA_IMPORT_KEY_FILE,
];

/// The variable naming the config file when `--config` is not given.
pub(crate) const CONFIG_VAR: &str = "BRIDGE_CONFIG";

/// Where the variables of a `[[projects]]` entry start:
/// `BRIDGE_PROJECT_<NAME>_<KEY>`, NAME being the project name in upper case
/// with every character other than a letter or digit replaced by `_`.
pub(crate) const PROJECT_VAR_PREFIX: &str = "BRIDGE_PROJECT_";

/// `BRIDGE_*` variables that belong to other tools: the code generator's
/// `BRIDGE_REFERENCE_DIR`. They are not reported as unknown.
/// `spool.backend`: `sqlite` (the embedded default) or `nats`.
pub(crate) const SPOOL_BACKEND: Key = Key {
    key: "spool.backend",
    env: "BRIDGE_SPOOL",
};
pub(crate) const NATS_SERVERS: Key = Key {
    key: "nats.servers",
    env: "BRIDGE_NATS_URLS",
};
pub(crate) const NATS_USER: Key = Key {
    key: "nats.user",
    env: "BRIDGE_NATS_USER",
};
pub(crate) const NATS_PASSWORD: Key = Key {
    key: "nats.password",
    env: "BRIDGE_NATS_PASSWORD",
};
pub(crate) const NATS_PASSWORD_FILE: Key = Key {
    key: "nats.password_file",
    env: "BRIDGE_NATS_PASSWORD_FILE",
};
pub(crate) const NATS_TOKEN: Key = Key {
    key: "nats.token",
    env: "BRIDGE_NATS_TOKEN",
};
pub(crate) const NATS_TOKEN_FILE: Key = Key {
    key: "nats.token_file",
    env: "BRIDGE_NATS_TOKEN_FILE",
};
pub(crate) const NATS_NKEY_SEED: Key = Key {
    key: "nats.nkey_seed",
    env: "BRIDGE_NATS_NKEY_SEED",
};
pub(crate) const NATS_NKEY_SEED_FILE: Key = Key {
    key: "nats.nkey_seed_file",
    env: "BRIDGE_NATS_NKEY_SEED_FILE",
};
pub(crate) const NATS_CREDS_FILE: Key = Key {
    key: "nats.creds_file",
    env: "BRIDGE_NATS_CREDS_FILE",
};
pub(crate) const NATS_TLS_CA_FILE: Key = Key {
    key: "nats.tls_ca_file",
    env: "BRIDGE_NATS_TLS_CA_FILE",
};
pub(crate) const NATS_TLS_REQUIRED: Key = Key {
    key: "nats.tls_required",
    env: "BRIDGE_NATS_TLS_REQUIRED",
};
pub(crate) const NATS_STREAM: Key = Key {
    key: "nats.stream",
    env: "BRIDGE_NATS_STREAM",
};
pub(crate) const NATS_SUBJECT_PREFIX: Key = Key {
    key: "nats.subject_prefix",
    env: "BRIDGE_NATS_SUBJECT_PREFIX",
};
pub(crate) const NATS_CONSUMER: Key = Key {
    key: "nats.consumer",
    env: "BRIDGE_NATS_CONSUMER",
};
pub(crate) const NATS_DEAD_LETTER_STREAM: Key = Key {
    key: "nats.dead_letter_stream",
    env: "BRIDGE_NATS_DEAD_LETTER_STREAM",
};
pub(crate) const NATS_KV_BUCKET_PREFIX: Key = Key {
    key: "nats.kv_bucket_prefix",
    env: "BRIDGE_NATS_KV_BUCKET_PREFIX",
};
pub(crate) const NATS_REPLICAS: IntKey = IntKey {
    key: "nats.replicas",
    env: "BRIDGE_NATS_REPLICAS",
    min: 1,
    max: 5,
    default: 1,
};
pub(crate) const NATS_DUPLICATE_WINDOW_SECS: IntKey = IntKey {
    key: "nats.duplicate_window_secs",
    env: "BRIDGE_NATS_DUPLICATE_WINDOW_SECS",
    min: 1,
    max: 7 * 24 * 3600,
    default: 120,
};
pub(crate) const NATS_PUBLISH_TIMEOUT_MS: IntKey = IntKey {
    key: "nats.publish_timeout_ms",
    env: "BRIDGE_NATS_PUBLISH_TIMEOUT_MS",
    min: 10,
    max: 600_000,
    default: 5_000,
};
pub(crate) const NATS_CONNECT_TIMEOUT_SECS: IntKey = IntKey {
    key: "nats.connect_timeout_secs",
    env: "BRIDGE_NATS_CONNECT_TIMEOUT_SECS",
    min: 1,
    max: 600,
    default: 5,
};

/// The text keys of `[nats]` and `spool.backend`.
pub(crate) const NATS_KEYS: [Key; 17] = [
    SPOOL_BACKEND,
    NATS_SERVERS,
    NATS_USER,
    NATS_PASSWORD,
    NATS_PASSWORD_FILE,
    NATS_TOKEN,
    NATS_TOKEN_FILE,
    NATS_NKEY_SEED,
    NATS_NKEY_SEED_FILE,
    NATS_CREDS_FILE,
    NATS_TLS_CA_FILE,
    NATS_TLS_REQUIRED,
    NATS_STREAM,
    NATS_SUBJECT_PREFIX,
    NATS_CONSUMER,
    NATS_DEAD_LETTER_STREAM,
    NATS_KV_BUCKET_PREFIX,
];

pub(crate) const OTHER_BRIDGE_VARS: &[&str] = &["BRIDGE_REFERENCE_DIR"];

/// The service's own keys that are neither cohort, NATS nor numeric keys:
/// with [`COHORT_KEYS`], [`NATS_KEYS`] and [`INT_KEYS`], every key there is.
pub(crate) const SERVICE_KEYS: [Key; 15] = [
    LISTEN,
    OPS_LISTEN,
    OPS_ON_INGEST_LISTENER,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    EXTRA_CA_FILE,
    DATA_DIR,
    DRY_RUN,
    LOG_FORMAT,
    TOKENS,
    TOKENS_FILE,
    ALLOW_UNAUTHENTICATED,
    INCLUDE_TYPES,
    EXCLUDE_TYPES,
    ARCHIVE_URL,
];

/// The environment variables of one project's connection keys.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionVars<S> {
    pub(crate) project_id: S,
    pub(crate) service_account_username: S,
    pub(crate) service_account_secret: S,
    pub(crate) service_account_secret_file: S,
    pub(crate) api_secret: S,
    pub(crate) api_secret_file: S,
    pub(crate) project_token: S,
    pub(crate) project_token_file: S,
    pub(crate) region: S,
    pub(crate) api_url: S,
}

/// The default project's variables, named as the `import` command names them.
pub(crate) const DEFAULT_PROJECT_VARS: ConnectionVars<&str> = ConnectionVars {
    project_id: "MIXPANEL_PROJECT_ID",
    service_account_username: "MIXPANEL_SERVICE_ACCOUNT_USERNAME",
    service_account_secret: "MIXPANEL_SERVICE_ACCOUNT_SECRET",
    service_account_secret_file: "MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE",
    api_secret: "MIXPANEL_API_SECRET",
    api_secret_file: "MIXPANEL_API_SECRET_FILE",
    project_token: "MIXPANEL_PROJECT_TOKEN",
    project_token_file: "MIXPANEL_PROJECT_TOKEN_FILE",
    region: "MIXPANEL_REGION",
    api_url: "MIXPANEL_API_URL",
};

/// The suffixes of a `[[projects]]` entry's variables, after
/// `BRIDGE_PROJECT_<NAME>_`. No suffix ends another after an `_`, so a
/// variable names at most one project and key.
pub(crate) const PROJECT_VAR_SUFFIXES: [&str; 12] = [
    "PROJECT_ID",
    "SERVICE_ACCOUNT_USERNAME",
    "SERVICE_ACCOUNT_SECRET",
    "SERVICE_ACCOUNT_SECRET_FILE",
    "API_SECRET",
    "API_SECRET_FILE",
    "PROJECT_TOKEN",
    "PROJECT_TOKEN_FILE",
    "REGION",
    "API_URL",
    "WORKSPACES",
    "APP_GROUP_IDS",
];

impl ConnectionVars<String> {
    /// The variables of the `[[projects]]` entry whose name mangles to `mangled`.
    pub(crate) fn for_project(mangled: &str) -> ConnectionVars<String> {
        let var = |suffix: &str| format!("{PROJECT_VAR_PREFIX}{mangled}_{suffix}");
        ConnectionVars {
            project_id: var("PROJECT_ID"),
            service_account_username: var("SERVICE_ACCOUNT_USERNAME"),
            service_account_secret: var("SERVICE_ACCOUNT_SECRET"),
            service_account_secret_file: var("SERVICE_ACCOUNT_SECRET_FILE"),
            api_secret: var("API_SECRET"),
            api_secret_file: var("API_SECRET_FILE"),
            project_token: var("PROJECT_TOKEN"),
            project_token_file: var("PROJECT_TOKEN_FILE"),
            region: var("REGION"),
            api_url: var("API_URL"),
        }
    }
}

/// A project name as it appears in variable names: upper case, with every
/// character other than an ASCII letter or digit replaced by `_`.
pub(crate) fn mangle_project_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Every integer key.
pub(crate) const INT_KEYS: [IntKey; 30] = [
    NATS_REPLICAS,
    NATS_DUPLICATE_WINDOW_SECS,
    NATS_PUBLISH_TIMEOUT_MS,
    NATS_CONNECT_TIMEOUT_SECS,
    MAX_ATTEMPTS,
    MAX_INFLIGHT_BODY_BYTES,
    MAX_AGE_SECS,
    MAX_EVENTS_PER_BATCH,
    HEADER_READ_TIMEOUT_SECS,
    MAX_CONNECTIONS,
    SHUTDOWN_GRACE_SECS,
    MAX_BODY_BYTES,
    INGEST_REQUEST_TIMEOUT_SECS,
    SPOOL_MAX_BYTES,
    WORKERS,
    CONCURRENCY,
    LINGER_MS,
    LEASE_SECS,
    DELIVERY_REQUEST_TIMEOUT_SECS,
    MAX_RETRIES,
    RETRY_INITIAL_BACKOFF_SECS,
    RETRY_MAX_BACKOFF_SECS,
    MAX_BATCH_EVENTS,
    MAX_BATCH_BYTES,
    COHORT_MAX_BODY_BYTES,
    COHORT_MAX_MEMBERS_PER_PAGE,
    COHORT_PULL_INTERVAL_SECS,
    BRAZE_RATE_LIMIT_REQUESTS,
    BRAZE_RATE_LIMIT_WINDOW_SECS,
    BRAZE_REQUEST_TIMEOUT_SECS,
];
