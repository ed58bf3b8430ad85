//! Tests of the configuration: precedence, every variable, secrets from
//! files, each validation error, routing and redaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cohort_import::braze::{Instance, RateLimit};
use cohort_import::identity::IdentityRule;
use mixpanel_client::{BatchLimits, Credentials, Region, RetryParams, Secret};

use super::*;

/// A token and a project token: the least that validates outside dry run.
const MINIMAL: [(&str, &str); 2] = [
    ("BRIDGE_CURRENTS_TOKENS", "currents-token-1"),
    ("MIXPANEL_PROJECT_TOKEN", "project-token-1"),
];

/// A config file, variables and the error message they must give.
type ErrorCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

fn env(vars: &[(&str, &str)]) -> Env {
    vars.iter().copied().collect()
}

fn with_minimal(vars: &[(&str, &str)]) -> Env {
    MINIMAL.iter().chain(vars).copied().collect()
}

fn file(text: &str) -> ConfigFile {
    ConfigFile {
        path: PathBuf::from("bridge.toml"),
        text: text.to_owned(),
    }
}

fn load(toml: Option<&str>, env: &Env, flags: &Flags) -> Result<Config, ConfigError> {
    let file = toml.map(file);
    Config::from_sources(file.as_ref(), env, flags)
}

/// A configuration that must validate.
fn ok(toml: &str, vars: &[(&str, &str)]) -> Config {
    match load(Some(toml), &with_minimal(vars), &Flags::default()) {
        Ok(config) => config,
        Err(error) => panic!("unexpected error: {error}"),
    }
}

/// The message of a configuration that must not validate.
fn error(toml: &str, env: &Env) -> String {
    error_with_flags(toml, env, &Flags::default())
}

fn error_with_flags(toml: &str, env: &Env, flags: &Flags) -> String {
    match load(Some(toml), env, flags) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// A file under the temp dir, removed when dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "bridge-server-config-test-{}-{n}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn defaults() {
    let config = load(None, &env(&MINIMAL), &Flags::default()).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.data_dir, Path::new("./bridge-data"));
    assert!(!config.dry_run);
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(
        config.ingest.auth,
        IngestAuth::Tokens(vec![Secret::new("currents-token-1")])
    );
    assert_eq!(config.ingest.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(config.ingest.request_timeout, Duration::from_secs(30));
    assert_eq!(config.spool.max_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(
        config.delivery,
        DeliveryConfig {
            workers: 4,
            concurrency: 10,
            linger: Duration::from_millis(500),
            lease: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            retry: RetryParams {
                initial_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(60),
                max_retries: 5,
                ..RetryParams::default()
            },
            batch_limits: BatchLimits::default(),
            max_attempts: 1000,
            max_age: Duration::from_secs(5 * 24 * 3600),
        }
    );
    assert_eq!(config.ingest.max_events_per_batch, 1000);
    assert_eq!(config.ingest.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.ingest.max_connections, 8192);
    assert_eq!(config.ingest.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.type_filter, TypeFilter::default());
    assert_eq!(
        config.default_project,
        ProjectConfig {
            name: "default".to_owned(),
            workspaces: Vec::new(),
            app_group_ids: Vec::new(),
            credentials: Some(Credentials::project_token("project-token-1")),
            project_token: Some(Secret::new("project-token-1")),
            region: Region::Us,
            api_url: None,
        }
    );
    assert!(config.projects.is_empty());
    assert_eq!(config.config_file(), None);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn the_environment_overrides_the_file_and_flags_override_both() {
    let toml = r#"
listen = "127.0.0.1:1001"
data_dir = "from-file"
dry_run = false
log_format = "text"
"#;
    let vars = [
        ("BRIDGE_LISTEN", "127.0.0.1:1002"),
        ("BRIDGE_DATA_DIR", "from-env"),
        ("BRIDGE_DRY_RUN", "1"),
        ("BRIDGE_LOG_FORMAT", "json"),
    ];
    let flags = Flags {
        config: None,
        listen: Some("127.0.0.1:1003".to_owned()),
        data_dir: Some(PathBuf::from("from-flag")),
        dry_run: Some(false),
        log_format: Some("text".to_owned()),
        cohorts_only: false,
    };

    let from_file = ok(toml, &[]);
    assert_eq!(from_file.listen.port(), 1001);
    assert_eq!(from_file.data_dir, Path::new("from-file"));
    assert!(!from_file.dry_run);
    assert_eq!(from_file.log_format, LogFormat::Text);

    let from_env = ok(toml, &vars);
    assert_eq!(from_env.listen.port(), 1002);
    assert_eq!(from_env.data_dir, Path::new("from-env"));
    assert!(from_env.dry_run);
    assert_eq!(from_env.log_format, LogFormat::Json);

    let from_flags = load(Some(toml), &with_minimal(&vars), &flags).unwrap();
    assert_eq!(from_flags.listen.port(), 1003);
    assert_eq!(from_flags.data_dir, Path::new("from-flag"));
    assert!(!from_flags.dry_run);
    assert_eq!(from_flags.log_format, LogFormat::Text);

    let rendering = from_flags.to_redacted_toml();
    assert!(
        rendering.contains("listen = \"127.0.0.1:1003\"  # from --listen"),
        "{rendering}"
    );
    let rendering = from_env.to_redacted_toml();
    assert!(
        rendering.contains("data_dir = \"from-env\"  # from BRIDGE_DATA_DIR"),
        "{rendering}"
    );
    let rendering = from_file.to_redacted_toml();
    assert!(
        rendering.contains("listen = \"127.0.0.1:1001\"  # from bridge.toml:2"),
        "{rendering}"
    );
}

#[test]
fn the_environment_replaces_each_key_of_the_file_it_sets() {
    let toml = r#"
[ingest]
max_body_bytes = 1000
request_timeout_secs = 5

[delivery]
workers = 2
"#;
    let config = ok(toml, &[("BRIDGE_MAX_BODY_BYTES", "2000")]);
    assert_eq!(config.ingest.max_body_bytes, 2000);
    assert_eq!(config.ingest.request_timeout, Duration::from_secs(5));
    assert_eq!(config.delivery.workers, 2);
}

#[test]
fn every_bridge_variable() {
    let tokens_file = TempFile::new(
        "# rotation in progress\nfile-currents-token-1\n\n  file-currents-token-2  \n",
    );
    let vars = [
        ("BRIDGE_LISTEN", "[::1]:9000"),
        ("BRIDGE_DATA_DIR", "/var/lib/bridge"),
        ("BRIDGE_DRY_RUN", "true"),
        ("BRIDGE_LOG_FORMAT", "JSON"),
        (
            "BRIDGE_CURRENTS_TOKENS",
            " env-currents-token-1, env-currents-token-2 ,",
        ),
        ("BRIDGE_CURRENTS_TOKENS_FILE", tokens_file.path()),
        ("BRIDGE_ALLOW_UNAUTHENTICATED", "false"),
        ("BRIDGE_MAX_BODY_BYTES", "1048576"),
        ("BRIDGE_REQUEST_TIMEOUT_SECS", "12"),
        ("BRIDGE_SPOOL_MAX_BYTES", "2097152"),
        ("BRIDGE_DELIVERY_WORKERS", "3"),
        ("BRIDGE_DELIVERY_CONCURRENCY", "20"),
        ("BRIDGE_DELIVERY_LEASE_SECS", "900"),
        ("BRIDGE_DELIVERY_REQUEST_TIMEOUT_SECS", "40"),
        ("BRIDGE_DELIVERY_MAX_RETRIES", "3"),
        ("BRIDGE_DELIVERY_RETRY_INITIAL_BACKOFF_SECS", "1"),
        ("BRIDGE_DELIVERY_RETRY_MAX_BACKOFF_SECS", "30"),
        ("BRIDGE_DELIVERY_MAX_BATCH_EVENTS", "500"),
        ("BRIDGE_DELIVERY_MAX_BATCH_BYTES", "2000000"),
        (
            "BRIDGE_INCLUDE_TYPES",
            "users.messages.email.*,users.behaviors.CustomEvent",
        ),
        ("BRIDGE_EXCLUDE_TYPES", "users.messages.email.Deferral"),
    ];
    let config = load(None, &env(&vars), &Flags::default()).unwrap();
    assert_eq!(config.listen, "[::1]:9000".parse().unwrap());
    assert_eq!(config.data_dir, Path::new("/var/lib/bridge"));
    assert!(config.dry_run);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(
        config.ingest.auth,
        IngestAuth::Tokens(
            [
                "env-currents-token-1",
                "env-currents-token-2",
                "file-currents-token-1",
                "file-currents-token-2"
            ]
            .map(Secret::new)
            .to_vec()
        )
    );
    assert_eq!(config.ingest.max_body_bytes, 1_048_576);
    assert_eq!(config.ingest.request_timeout, Duration::from_secs(12));
    assert_eq!(config.spool.max_bytes, 2_097_152);
    assert_eq!(config.delivery.workers, 3);
    assert_eq!(config.delivery.concurrency, 20);
    assert_eq!(config.delivery.lease, Duration::from_secs(900));
    assert_eq!(config.delivery.request_timeout, Duration::from_secs(40));
    assert_eq!(config.delivery.retry.max_retries, 3);
    assert_eq!(config.delivery.retry.initial_delay, Duration::from_secs(1));
    assert_eq!(config.delivery.retry.max_delay, Duration::from_secs(30));
    assert_eq!(config.delivery.batch_limits.max_events, 500);
    assert_eq!(config.delivery.batch_limits.max_bytes, 2_000_000);
    assert!(config.type_filter.allows("users.messages.email.Click"));
    assert!(config.type_filter.allows("users.behaviors.CustomEvent"));
    assert!(!config.type_filter.allows("users.messages.email.Deferral"));
    assert!(!config.type_filter.allows("users.messages.sms.Send"));
    // Dry run: no Mixpanel credentials needed.
    assert_eq!(config.default_project.credentials, None);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    let rendering = config.to_redacted_toml();
    for (key, variable) in [
        ("workers = 3", "BRIDGE_DELIVERY_WORKERS"),
        ("max_bytes = 2097152", "BRIDGE_SPOOL_MAX_BYTES"),
        ("request_timeout_secs = 12", "BRIDGE_REQUEST_TIMEOUT_SECS"),
        (
            "request_timeout_secs = 40",
            "BRIDGE_DELIVERY_REQUEST_TIMEOUT_SECS",
        ),
    ] {
        let line = format!("{key}  # from {variable}\n");
        assert!(rendering.contains(&line), "{line} in {rendering}");
    }
    assert!(
        rendering.contains("\"[redacted] (from BRIDGE_CURRENTS_TOKENS)\","),
        "{rendering}"
    );
    let file_token = format!("\"[redacted] (from {} line 4)\",", tokens_file.path());
    assert!(rendering.contains(&file_token), "{rendering}");
}

#[test]
fn every_mixpanel_variable() {
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS", "a-long-currents-token"),
        ("MIXPANEL_PROJECT_ID", "12345"),
        ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "svc.user"),
        ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "sa-secret"),
        ("MIXPANEL_PROJECT_TOKEN", "p-token"),
        ("MIXPANEL_REGION", "EU"),
        ("MIXPANEL_API_URL", "http://127.0.0.1:3000"),
    ];
    let config = load(None, &env(&vars), &Flags::default()).unwrap();
    let project = &config.default_project;
    assert_eq!(
        project.credentials,
        Some(Credentials::service_account(
            "svc.user",
            "sa-secret",
            "12345"
        ))
    );
    assert_eq!(project.project_token, Some(Secret::new("p-token")));
    assert_eq!(project.region, Region::Eu);
    assert_eq!(project.base_url(), "http://127.0.0.1:3000");

    let vars = [
        ("BRIDGE_CURRENTS_TOKENS", "a-long-currents-token"),
        ("MIXPANEL_API_SECRET", "api-secret"),
        ("MIXPANEL_PROJECT_ID", "12345"),
    ];
    let config = load(None, &env(&vars), &Flags::default()).unwrap();
    assert_eq!(
        config.default_project.credentials,
        Some(Credentials::api_secret_with_project("api-secret", "12345"))
    );
    assert_eq!(
        config.default_project.base_url(),
        "https://api.mixpanel.com"
    );
    assert!(
        config.warnings()[0].contains("deprecated"),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn secrets_from_files() {
    let sa_secret = TempFile::new("sa-secret-from-file\n");
    let api_secret = TempFile::new("  api-secret-from-file  \r\n");
    let token = TempFile::new("token-from-file");
    let tokens = TempFile::new("currents-from-file\n");
    let toml = format!(
        r#"
[ingest]
tokens = ["currents-inline"]
tokens_file = "{tokens}"

[mixpanel]
project_id = 42
service_account_username = "svc"
service_account_secret_file = "{sa_secret}"
project_token_file = "{token}"

[[projects]]
name = "brand-a"
workspaces = ["a"]
api_secret_file = "{api_secret}"
"#,
        tokens = tokens.path(),
        sa_secret = sa_secret.path(),
        token = token.path(),
        api_secret = api_secret.path(),
    );
    let config = load(Some(&toml), &Env::default(), &Flags::default()).unwrap();
    assert_eq!(
        config.ingest.auth,
        IngestAuth::Tokens(vec![
            Secret::new("currents-inline"),
            Secret::new("currents-from-file")
        ])
    );
    assert_eq!(
        config.default_project.credentials,
        Some(Credentials::service_account(
            "svc",
            "sa-secret-from-file",
            "42"
        ))
    );
    assert_eq!(
        config.default_project.project_token,
        Some(Secret::new("token-from-file"))
    );
    assert_eq!(
        config.projects[0].credentials,
        Some(Credentials::api_secret("api-secret-from-file"))
    );

    let rendering = config.to_redacted_toml();
    let note = format!(
        "service_account_secret = \"[redacted] (from {}, named by bridge.toml:9)\"",
        sa_secret.path()
    );
    assert!(rendering.contains(&note), "{rendering}");
    let note = format!(
        "tokens_file = \"{}\"  # from bridge.toml:4; its tokens are listed above",
        tokens.path()
    );
    assert!(rendering.contains(&note), "{rendering}");
}

#[test]
fn a_secret_file_variable_replaces_the_secret_of_the_file_and_the_other_way_round() {
    let secret = TempFile::new("from-the-file-variable\n");
    let toml = r#"
[mixpanel]
api_secret = "inline"
"#;
    let config = ok(toml, &[("MIXPANEL_API_SECRET_FILE", secret.path())]);
    assert_eq!(
        config.default_project.credentials,
        Some(Credentials::api_secret("from-the-file-variable"))
    );

    let toml = r#"
[mixpanel]
api_secret_file = "/nonexistent/secret"
"#;
    let config = ok(toml, &[("MIXPANEL_API_SECRET", "from-env")]);
    assert_eq!(
        config.default_project.credentials,
        Some(Credentials::api_secret("from-env"))
    );
}

#[test]
fn project_variables() {
    let secret = TempFile::new("brand-secret");
    let toml = r#"
[[projects]]
name = "brand-a.eu"
workspaces = ["from-file"]
"#;
    let vars = [
        ("BRIDGE_PROJECT_BRAND_A_EU_PROJECT_ID", "777"),
        (
            "BRIDGE_PROJECT_BRAND_A_EU_SERVICE_ACCOUNT_USERNAME",
            "brand-svc",
        ),
        (
            "BRIDGE_PROJECT_BRAND_A_EU_SERVICE_ACCOUNT_SECRET_FILE",
            secret.path(),
        ),
        ("BRIDGE_PROJECT_BRAND_A_EU_PROJECT_TOKEN", "brand-token"),
        ("BRIDGE_PROJECT_BRAND_A_EU_REGION", "in"),
        ("BRIDGE_PROJECT_BRAND_A_EU_API_URL", "https://proxy.invalid"),
        ("BRIDGE_PROJECT_BRAND_A_EU_WORKSPACES", "ws-1, ws-2"),
        ("BRIDGE_PROJECT_BRAND_A_EU_APP_GROUP_IDS", "group-1"),
    ];
    let error = error(toml, &with_minimal(&vars));
    assert_eq!(
        error,
        "bridge.toml:3: projects[0].name: expected a name of letters, digits, - and _, other than default, found \"brand-a.eu\""
    );

    let toml = toml.replace("brand-a.eu", "brand-a_eu");
    let config = ok(&toml, &vars);
    let project = &config.projects[0];
    assert_eq!(project.name, "brand-a_eu");
    assert_eq!(project.workspaces, ["ws-1", "ws-2"]);
    assert_eq!(project.app_group_ids, ["group-1"]);
    assert_eq!(
        project.credentials,
        Some(Credentials::service_account(
            "brand-svc",
            "brand-secret",
            "777"
        ))
    );
    assert_eq!(project.project_token, Some(Secret::new("brand-token")));
    assert_eq!(project.region, Region::In);
    assert_eq!(project.base_url(), "https://proxy.invalid");

    let vars = [("BRIDGE_PROJECT_BRAND_B_API_SECRET", "s3cr3t")];
    let error = super::tests::error(&toml, &with_minimal(&vars));
    assert_eq!(
        error,
        "BRIDGE_PROJECT_BRAND_B_API_SECRET: names no [[projects]] entry of the config file and key (BRIDGE_PROJECT_<NAME>_<KEY>)"
    );
    let vars = [("BRIDGE_PROJECT_BRAND_A_EU_SECRET", "s3cr3t")];
    assert!(
        super::tests::error(&toml, &with_minimal(&vars))
            .starts_with("BRIDGE_PROJECT_BRAND_A_EU_SECRET: names no")
    );
}

#[test]
fn the_config_file_is_named_by_the_flag_or_the_variable() {
    let config_file = TempFile::new("listen = \"127.0.0.1:7001\"\n");
    let flags = Flags {
        config: Some(PathBuf::from(config_file.path())),
        ..Flags::default()
    };
    let config = Config::load(&flags, &env(&MINIMAL)).unwrap();
    assert_eq!(config.listen.port(), 7001);
    assert_eq!(config.config_file(), Some(config_file.path.as_path()));

    let vars = with_minimal(&[("BRIDGE_CONFIG", config_file.path())]);
    let config = Config::load(&Flags::default(), &vars).unwrap();
    assert_eq!(config.listen.port(), 7001);

    let flags = Flags {
        config: Some(PathBuf::from("/nonexistent/bridge.toml")),
        ..Flags::default()
    };
    let error = Config::load(&flags, &vars).unwrap_err();
    assert!(matches!(error, ConfigError::ReadFile { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "cannot read config file /nonexistent/bridge.toml"
    );
}

#[test]
fn integer_errors_name_the_setting_and_what_it_takes() {
    let cases: &[ErrorCase] = &[
        (
            "",
            &[("BRIDGE_MAX_BODY_BYTES", "10MB")],
            "BRIDGE_MAX_BODY_BYTES: expected a positive integer, found \"10MB\"",
        ),
        (
            "",
            &[("BRIDGE_MAX_BODY_BYTES", "0")],
            "BRIDGE_MAX_BODY_BYTES: expected a positive integer, found 0",
        ),
        (
            "[ingest]\nmax_body_bytes = 0\n",
            &[],
            "bridge.toml:2: ingest.max_body_bytes: expected a positive integer, found 0",
        ),
        (
            "[delivery]\nmax_batch_events = 2001\n",
            &[],
            "bridge.toml:2: delivery.max_batch_events: expected an integer from 1 to 2000, found 2001",
        ),
        (
            "",
            &[("BRIDGE_DELIVERY_MAX_BATCH_BYTES", "10000001")],
            "BRIDGE_DELIVERY_MAX_BATCH_BYTES: expected an integer from 1 to 10000000, found 10000001",
        ),
        (
            "",
            &[("BRIDGE_DELIVERY_MAX_RETRIES", "-1")],
            "BRIDGE_DELIVERY_MAX_RETRIES: expected an integer from 0 to 100, found \"-1\"",
        ),
        (
            "",
            &[("BRIDGE_DELIVERY_WORKERS", "0")],
            "BRIDGE_DELIVERY_WORKERS: expected an integer from 1 to 1024, found 0",
        ),
        (
            "",
            &[("BRIDGE_DELIVERY_RETRY_MAX_BACKOFF_SECS", "1")],
            "BRIDGE_DELIVERY_RETRY_MAX_BACKOFF_SECS: expected at least delivery.retry_initial_backoff_secs (2), found 1",
        ),
        (
            "",
            &[("BRIDGE_DELIVERY_LEASE_SECS", "479")],
            "BRIDGE_DELIVERY_LEASE_SECS: expected at least 480, the worst case of one request: (delivery.max_retries + 1) × delivery.request_timeout_secs + delivery.max_retries × delivery.retry_max_backoff_secs, found 479",
        ),
        (
            "[delivery]\nrequest_timeout_secs = 120\n",
            &[],
            "delivery.lease_secs (default): expected at least 1020, the worst case of one request: (delivery.max_retries + 1) × delivery.request_timeout_secs + delivery.max_retries × delivery.retry_max_backoff_secs, found 600",
        ),
        (
            "[spool]\nmax_bytes = 1000\n",
            &[],
            "bridge.toml:2: spool.max_bytes: expected at least ingest.max_body_bytes (16777216): one request must fit, found 1000",
        ),
    ];
    for (toml, vars, expected) in cases {
        assert_eq!(error(toml, &with_minimal(vars)), *expected, "{vars:?}");
    }
    // The lease may be as short as the worst case.
    let config = ok("", &[("BRIDGE_DELIVERY_LEASE_SECS", "480")]);
    assert_eq!(config.delivery.lease, Duration::from_secs(480));
}

#[test]
fn value_errors_name_the_setting_and_what_it_takes() {
    let cases: &[ErrorCase] = &[
        (
            "",
            &[("BRIDGE_LISTEN", "localhost:8080")],
            "BRIDGE_LISTEN: expected a socket address such as 127.0.0.1:8080, found \"localhost:8080\"",
        ),
        (
            "log_format = \"yaml\"\n",
            &[],
            "bridge.toml:1: log_format: expected text or json, found \"yaml\"",
        ),
        (
            "",
            &[("BRIDGE_DRY_RUN", "maybe")],
            "BRIDGE_DRY_RUN: expected true or false (or 1 or 0), found \"maybe\"",
        ),
        (
            "",
            &[("MIXPANEL_REGION", "uk")],
            "MIXPANEL_REGION: expected us, eu or in, found \"uk\"",
        ),
        (
            "[mixpanel]\napi_url = \"api.mixpanel.com\"\n",
            &[],
            "bridge.toml:2: mixpanel.api_url: expected an http:// or https:// URL, found \"api.mixpanel.com\"",
        ),
        (
            "",
            &[("MIXPANEL_PROJECT_ID", "my-project")],
            "MIXPANEL_PROJECT_ID: expected a numeric Mixpanel project id, found \"my-project\"",
        ),
        (
            "data_dir = \"\"\n",
            &[],
            "bridge.toml:1: data_dir: expected a directory, found an empty path",
        ),
        (
            "[mapping]\ninclude_types = []\n",
            &[],
            "bridge.toml:2: mapping.include_types: expected at least one type pattern (leave the key out to export every type), found []",
        ),
        (
            "[mapping]\nexclude_types = [\"users.messages.*\", \" \"]\n",
            &[],
            "bridge.toml:2: mapping.exclude_types: expected type names or prefixes such as users.messages.email.*, found \"\"",
        ),
        (
            "[mixpanel]\nworkspaces = [\"a\"]\n",
            &[],
            "bridge.toml:2: mixpanel.workspaces: expected no name or routes in [mixpanel]: the default project takes every batch no [[projects]] entry claims, found [\"a\"]",
        ),
        (
            "[mixpanel]\nname = \"main\"\n",
            &[],
            "bridge.toml:2: mixpanel.name: expected no name or routes in [mixpanel]: the default project takes every batch no [[projects]] entry claims, found \"main\"",
        ),
    ];
    for (toml, vars, expected) in cases {
        assert_eq!(
            error(toml, &with_minimal(vars)),
            *expected,
            "{toml} {vars:?}"
        );
    }
    let flags = Flags {
        listen: Some("8080".to_owned()),
        ..Flags::default()
    };
    assert_eq!(
        error_with_flags("", &env(&MINIMAL), &flags),
        "--listen: expected a socket address such as 127.0.0.1:8080, found \"8080\""
    );
}

#[test]
fn toml_errors_give_the_line_and_column() {
    let unknown_key = "[ingest]\nmax_body_byte = 100\n";
    let error = load(Some(unknown_key), &env(&MINIMAL), &Flags::default()).unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::Toml {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("bridge.toml:2:1: unknown field `max_body_byte`, expected one of"),
        "{message}"
    );

    let wrong_type = "[ingest]\nmax_body_bytes = \"16MB\"\n";
    let message = super::tests::error(wrong_type, &env(&MINIMAL));
    assert!(
        message.starts_with("bridge.toml:2:18: invalid type"),
        "{message}"
    );

    let unknown_section = "[ingets]\n";
    let message = super::tests::error(unknown_section, &env(&MINIMAL));
    assert!(message.contains("unknown field `ingets`"), "{message}");

    let not_toml = "listen = \n";
    let message = super::tests::error(not_toml, &env(&MINIMAL));
    assert!(message.starts_with("bridge.toml:1:"), "{message}");
}

#[test]
fn token_errors() {
    assert_eq!(
        error("", &env(&[("MIXPANEL_PROJECT_TOKEN", "p")])),
        "no Currents token: set BRIDGE_CURRENTS_TOKENS, ingest.tokens or ingest.tokens_file (ingest.allow_unauthenticated = true is for local tests only)"
    );
    // An empty variable counts as unset.
    assert_eq!(
        error(
            "",
            &env(&[
                ("MIXPANEL_PROJECT_TOKEN", "p"),
                ("BRIDGE_CURRENTS_TOKENS", "")
            ])
        ),
        ConfigError::NoTokens.to_string()
    );
    assert_eq!(
        error(
            "[ingest]\ntokens = [\"ok\", \"\"]\n",
            &env(&[("MIXPANEL_PROJECT_TOKEN", "p")])
        ),
        "bridge.toml:2: ingest.tokens: expected non-empty tokens, found an empty token"
    );
    assert_eq!(
        error(
            "[ingest]\ntokens = [\"has space\"]\n",
            &env(&[("MIXPANEL_PROJECT_TOKEN", "p")])
        ),
        "bridge.toml:2: ingest.tokens: expected tokens without spaces, found a token with a space"
    );

    let empty = TempFile::new("# no token yet\n\n");
    let message = error(
        "",
        &env(&[
            ("MIXPANEL_PROJECT_TOKEN", "p"),
            ("BRIDGE_CURRENTS_TOKENS_FILE", empty.path()),
        ]),
    );
    assert_eq!(
        message,
        format!(
            "BRIDGE_CURRENTS_TOKENS_FILE ({}): expected at least one token, one per line, found none",
            empty.path()
        )
    );
    let spaced = TempFile::new("good\nbad token\n");
    let message = error(
        "",
        &env(&[
            ("MIXPANEL_PROJECT_TOKEN", "p"),
            ("BRIDGE_CURRENTS_TOKENS_FILE", spaced.path()),
        ]),
    );
    assert_eq!(
        message,
        format!(
            "BRIDGE_CURRENTS_TOKENS_FILE ({} line 2): expected one token per line, found a line with a space",
            spaced.path()
        )
    );
    let missing = load(
        Some("[ingest]\ntokens_file = \"/nonexistent/tokens\"\n"),
        &env(&[("MIXPANEL_PROJECT_TOKEN", "p")]),
        &Flags::default(),
    )
    .unwrap_err();
    assert!(
        matches!(missing, ConfigError::ReadSettingFile { .. }),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "bridge.toml:2: ingest.tokens_file: cannot read /nonexistent/tokens"
    );
}

#[test]
fn unauthenticated_ingest_is_explicit_and_local() {
    let vars = env(&[("MIXPANEL_PROJECT_TOKEN", "p")]);
    let config = load(
        Some("[ingest]\nallow_unauthenticated = true\n"),
        &vars,
        &Flags::default(),
    )
    .unwrap();
    assert_eq!(config.ingest.auth, IngestAuth::Unauthenticated);
    assert!(config.warnings()[0].contains("for local tests only"));

    assert_eq!(
        error(
            "listen = \"0.0.0.0:8080\"\n[ingest]\nallow_unauthenticated = true\n",
            &vars
        ),
        "bridge.toml:3: ingest.allow_unauthenticated: expected a loopback listen address with it (it is for local tests only), found 0.0.0.0:8080"
    );
    assert_eq!(
        error(
            "[ingest]\nallow_unauthenticated = true\n",
            &env(&[
                ("MIXPANEL_PROJECT_TOKEN", "p"),
                ("BRIDGE_CURRENTS_TOKENS", "t")
            ])
        ),
        "bridge.toml:2: ingest.allow_unauthenticated and BRIDGE_CURRENTS_TOKENS are both set: set only one"
    );
}

#[test]
fn credential_errors_name_the_project_and_what_to_set() {
    let tokens = [("BRIDGE_CURRENTS_TOKENS", "t")];
    assert_eq!(
        error("", &env(&tokens)),
        "project \"default\" has no Mixpanel credentials: set MIXPANEL_SERVICE_ACCOUNT_USERNAME, MIXPANEL_SERVICE_ACCOUNT_SECRET and MIXPANEL_PROJECT_ID (or MIXPANEL_API_SECRET, or MIXPANEL_PROJECT_TOKEN), the same keys in [mixpanel], or use --dry-run"
    );
    let toml = "[[projects]]\nname = \"brand-a\"\nworkspaces = [\"a\"]\n";
    assert_eq!(
        error(toml, &with_minimal(&[])),
        "project \"brand-a\" has no Mixpanel credentials: set BRIDGE_PROJECT_BRAND_A_SERVICE_ACCOUNT_USERNAME, BRIDGE_PROJECT_BRAND_A_SERVICE_ACCOUNT_SECRET and BRIDGE_PROJECT_BRAND_A_PROJECT_ID (or BRIDGE_PROJECT_BRAND_A_API_SECRET, or BRIDGE_PROJECT_BRAND_A_PROJECT_TOKEN), the same keys in its [[projects]] entry, or use --dry-run"
    );
    // In dry run, none are needed.
    let config = load(
        Some(toml),
        &env(&[
            ("BRIDGE_CURRENTS_TOKENS", "a-long-currents-token"),
            ("BRIDGE_DRY_RUN", "1"),
        ]),
        &Flags::default(),
    )
    .unwrap();
    assert_eq!(config.default_project.credentials, None);
    assert_eq!(config.projects[0].credentials, None);

    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "svc")],
            "project \"default\": MIXPANEL_SERVICE_ACCOUNT_USERNAME is set but MIXPANEL_SERVICE_ACCOUNT_SECRET (or mixpanel.service_account_secret) is not",
        ),
        (
            &[("MIXPANEL_SERVICE_ACCOUNT_SECRET", "s3cr3t")],
            "project \"default\": MIXPANEL_SERVICE_ACCOUNT_SECRET is set but MIXPANEL_SERVICE_ACCOUNT_USERNAME (or mixpanel.service_account_username) is not",
        ),
        (
            &[
                ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "svc"),
                ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "s3cr3t"),
            ],
            "project \"default\": MIXPANEL_SERVICE_ACCOUNT_USERNAME is set but MIXPANEL_PROJECT_ID (or mixpanel.project_id) is not",
        ),
        (
            &[
                ("MIXPANEL_API_SECRET", "s3cr3t"),
                ("MIXPANEL_API_SECRET_FILE", "/run/secret"),
            ],
            "MIXPANEL_API_SECRET and MIXPANEL_API_SECRET_FILE are both set: set only one",
        ),
    ];
    for (vars, expected) in cases {
        let vars: Vec<_> = tokens.iter().chain(*vars).copied().collect();
        assert_eq!(error("", &env(&vars)), *expected);
        // Even in dry run: half a set of credentials is a mistake.
        let vars: Vec<_> = vars.into_iter().chain([("BRIDGE_DRY_RUN", "1")]).collect();
        assert_eq!(error("", &env(&vars)), *expected);
    }

    assert_eq!(
        error(
            "[[projects]]\nname = \"brand-a\"\nworkspaces = [\"a\"]\nservice_account_username = \"svc\"\n",
            &with_minimal(&[])
        ),
        "project \"brand-a\": bridge.toml:4: projects.brand-a.service_account_username is set but BRIDGE_PROJECT_BRAND_A_SERVICE_ACCOUNT_SECRET (or projects.brand-a.service_account_secret) is not"
    );
    assert_eq!(
        error(
            "[mixpanel]\napi_secret = \"a\"\napi_secret_file = \"/run/secret\"\n",
            &env(&tokens)
        ),
        "bridge.toml:2: mixpanel.api_secret and bridge.toml:3: mixpanel.api_secret_file are both set: set only one"
    );
    assert_eq!(
        error("[mixpanel]\napi_secret = \" \"\n", &env(&tokens)),
        "bridge.toml:2: mixpanel.api_secret: expected a secret, found an empty string"
    );
    let two_lines = TempFile::new("first\nsecond\n");
    assert_eq!(
        error(
            "",
            &env(&[
                ("BRIDGE_CURRENTS_TOKENS", "a-long-currents-token"),
                ("MIXPANEL_PROJECT_TOKEN_FILE", two_lines.path())
            ])
        ),
        format!(
            "MIXPANEL_PROJECT_TOKEN_FILE ({}): expected a file holding the secret on one line, found 2 lines",
            two_lines.path()
        )
    );
    let empty = TempFile::new("\n");
    assert_eq!(
        error(
            "",
            &env(&[
                ("BRIDGE_CURRENTS_TOKENS", "a-long-currents-token"),
                ("MIXPANEL_PROJECT_TOKEN_FILE", empty.path())
            ])
        ),
        format!(
            "MIXPANEL_PROJECT_TOKEN_FILE ({}): expected a file holding the secret on one line, found 0 lines",
            empty.path()
        )
    );
    let missing = load(
        None,
        &env(&[
            ("BRIDGE_CURRENTS_TOKENS", "a-long-currents-token"),
            ("MIXPANEL_PROJECT_TOKEN_FILE", "/nonexistent/token"),
        ]),
        &Flags::default(),
    )
    .unwrap_err();
    assert!(
        matches!(missing, ConfigError::ReadSettingFile { .. }),
        "{missing:?}"
    );
}

#[test]
fn project_and_route_errors() {
    let minimal = with_minimal(&[("BRIDGE_DRY_RUN", "1")]);
    let cases = [
        (
            "[[projects]]\nworkspaces = [\"a\"]\n",
            "bridge.toml: projects[0]: expected a name, found none",
        ),
        (
            "[[projects]]\nname = \"default\"\n",
            "bridge.toml:2: projects[0].name: expected a name of letters, digits, - and _, other than default, found \"default\"",
        ),
        (
            "[[projects]]\nname = \"a-b\"\n[[projects]]\nname = \"a_b\"\n",
            "bridge.toml:4: projects[1].name: project name \"a_b\" is already used by another project",
        ),
        (
            "[[projects]]\nname = \"a\"\nworkspaces = [\"w\"]\n[[projects]]\nname = \"b\"\nworkspaces = [\"x\", \"w\"]\n",
            "bridge.toml:6: projects.b.workspaces: workspace \"w\" already routes to project \"a\"",
        ),
        (
            "[[projects]]\nname = \"a\"\napp_group_ids = [\"g\"]\n[[projects]]\nname = \"b\"\napp_group_ids = [\"g\"]\n",
            "bridge.toml:6: projects.b.app_group_ids: app_group_id \"g\" already routes to project \"a\"",
        ),
        (
            "[[projects]]\nname = \"a\"\nworkspaces = [\"\"]\n",
            "bridge.toml:3: projects.a.workspaces: expected non-empty names, found \"\"",
        ),
    ];
    for (toml, expected) in cases {
        assert_eq!(error(toml, &minimal), expected, "{toml}");
    }
}

#[test]
fn routing() {
    let toml = r#"
[[projects]]
name = "brand-a"
workspaces = ["brand-a", "brand-a-staging"]
app_group_ids = ["group-a"]
project_token = "token-a"

[[projects]]
name = "brand-b"
app_group_ids = ["group-b"]
project_token = "token-b"
"#;
    let config = ok(toml, &[]);
    let route = |workspace, app_group_id| config.route(workspace, app_group_id).name.as_str();
    assert_eq!(route(Some("brand-a"), None), "brand-a");
    assert_eq!(route(Some("brand-a-staging"), Some("group-b")), "brand-a");
    assert_eq!(route(None, Some("group-b")), "brand-b");
    assert_eq!(route(Some("unknown"), Some("group-b")), "brand-b");
    assert_eq!(route(Some("unknown"), Some("unknown")), "default");
    assert_eq!(route(None, None), "default");
    assert_eq!(route(Some("Brand-A"), None), "default");

    let names: Vec<&str> = config
        .all_projects()
        .map(|project| project.name.as_str())
        .collect();
    assert_eq!(names, ["default", "brand-a", "brand-b"]);

    let mapping = config.mapping_config(config.route(None, Some("group-b")));
    assert_eq!(mapping.project_token.as_deref(), Some("token-b"));
    assert_eq!(
        config.dry_run_path(&config.projects[1]),
        Path::new("./bridge-data/dry-run/brand-b.ndjson")
    );
}

#[test]
fn secrets_never_show_in_the_rendering_debug_or_errors() {
    let sa_file = TempFile::new("SECRET-sa-file\n");
    let toml = format!(
        r#"
[ingest]
tokens = ["SECRET-token-file"]

[mixpanel]
project_id = "1"
service_account_username = "svc"
service_account_secret_file = "{}"
api_secret = "SECRET-api-unused"
project_token = "SECRET-project-token"

[[projects]]
name = "brand-a"
workspaces = ["a"]
project_token = "SECRET-brand-token"
"#,
        sa_file.path()
    );
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS", "SECRET-token-env"),
        ("BRIDGE_PROJECT_BRAND_A_API_SECRET", "SECRET-brand-api"),
    ];
    let config = load(Some(&toml), &env(&vars), &Flags::default()).unwrap();
    let rendering = config.to_redacted_toml();
    let debug = format!("{config:?} {:?}", env(&vars));
    let warnings = config.warnings().join("\n");
    for shown in [&rendering, &debug, &warnings] {
        assert!(!shown.contains("SECRET-"), "{shown}");
    }
    for expected in [
        "\"[redacted] (from BRIDGE_CURRENTS_TOKENS)\",",
        "project_token = \"[redacted] (from bridge.toml:10)\"",
        "api_secret = \"[redacted] (from BRIDGE_PROJECT_BRAND_A_API_SECRET)\"",
        "service_account_username = \"svc\"  # from bridge.toml:7",
    ] {
        assert!(rendering.contains(expected), "{expected} in {rendering}");
    }
    assert!(
        warnings.contains("bridge.toml:9: mixpanel.api_secret is set but unused"),
        "{warnings}"
    );

    // Errors about secrets name the setting, never the value.
    let cases = [
        "[ingest]\ntokens = \"SECRET-a-string\"\n",
        "[mixpanel]\napi_secret = 12345\n",
        "[mixpanel]\napi_secrt = \"SECRET-misspelt\"\n",
        "[ingest]\ntokens = [\"SECRET with space\"]\n",
    ];
    for toml in cases {
        let message = error(toml, &env(&[("MIXPANEL_PROJECT_TOKEN", "p")]));
        assert!(
            !message.contains("SECRET") && !message.contains("12345"),
            "{message}"
        );
    }
}

#[test]
fn the_rendering_is_valid_toml_with_the_same_keys() {
    let toml = r#"
[ingest]
tokens = ["t"]
[mapping]
include_types = ["users.messages.*"]
[mixpanel]
project_id = 5
service_account_username = "svc"
service_account_secret = "s"
region = "eu"
api_url = "http://127.0.0.1:1"
[[projects]]
name = "brand-a"
workspaces = ["a"]
api_secret = "x"
[cohorts]
webhook_credentials = ["mixpanel:pw"]
writer = "partner"
pull_interval_secs = 600
pull_cohorts = [7, 8]
[braze]
rest_api_key = "k"
instance = "eu-01"
partner_name = "acme"
partner_api_key = "p"
data_import_key = "d"
"#;
    let config = load(Some(toml), &Env::default(), &Flags::default()).unwrap();
    let rendering = config.to_redacted_toml();
    if let Err(error) = raw::RawConfig::from_toml(&rendering) {
        panic!("{error}\n{rendering}");
    }
}

#[test]
fn warnings() {
    let toml = r#"
[mapping]
include_types = ["users.messages.emial.*"]
[[projects]]
name = "unrouted"
project_token = "t"
"#;
    let config = ok(toml, &[("BRIDGE_MAX_BODY_BYTE", "1")]);
    let warnings = config.warnings();
    assert_eq!(
        warnings,
        [
            "BRIDGE_MAX_BODY_BYTE is not a configuration variable and is ignored",
            "type pattern \"users.messages.emial.*\" in [mapping] matches no known Currents event type",
            "project \"unrouted\" has no workspaces and no app_group_ids: no batch is routed to it",
        ]
    );
    // Not ours: no warning.
    let config = ok("", &[("BRIDGE_REFERENCE_DIR", "/x")]);
    assert!(config.warnings().is_empty());
}

#[test]
fn env_values_and_debug() {
    let vars = env(&[
        ("MIXPANEL_API_SECRET", "SECRET-value"),
        ("BRIDGE_LISTEN", ""),
    ]);
    assert_eq!(vars.get("BRIDGE_LISTEN").unwrap(), None);
    assert_eq!(
        vars.get("MIXPANEL_API_SECRET").unwrap(),
        Some("SECRET-value")
    );
    let debug = format!("{vars:?}");
    assert!(debug.contains("MIXPANEL_API_SECRET"), "{debug}");
    assert!(!debug.contains("SECRET-value"), "{debug}");
}

#[test]
fn ingest_auth_accepts_any_configured_token() {
    use crate::ingest::auth::AuthCheck;
    let tokens = IngestAuth::Tokens(vec![Secret::new("old"), Secret::new("new")]).bearer_tokens();
    assert_eq!(tokens.check(Some(b"Bearer old")), AuthCheck::Valid);
    assert_eq!(tokens.check(Some(b"Bearer new")), AuthCheck::Valid);
    assert_eq!(tokens.check(Some(b"Bearer ne")), AuthCheck::Wrong);
    assert_eq!(tokens.check(Some(b"Bearer newer")), AuthCheck::Wrong);
    assert_eq!(tokens.check(None), AuthCheck::Missing);
    let open = IngestAuth::Unauthenticated.bearer_tokens();
    assert_eq!(open.check(None), AuthCheck::Valid);
}

#[test]
fn log_formats() {
    assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
    assert_eq!(" text ".parse::<LogFormat>(), Ok(LogFormat::Text));
    assert!("yaml".parse::<LogFormat>().is_err());
}

const EXAMPLE: &str = include_str!("../../../../docs/bridge.example.toml");
const CONFIGURATION_MD: &str = include_str!("../../../../docs/configuration.md");

#[test]
fn the_example_file_is_valid() {
    let tokens = TempFile::new("currents-token-old\ncurrents-token-new\n");
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS_FILE", tokens.path()),
        ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "sa-secret"),
        ("MIXPANEL_PROJECT_TOKEN", "project-token"),
        (
            "BRIDGE_PROJECT_BRAND_B_SERVICE_ACCOUNT_SECRET",
            "brand-b-secret",
        ),
    ];
    let example = ConfigFile {
        path: PathBuf::from("docs/bridge.example.toml"),
        text: EXAMPLE.to_owned(),
    };
    let config = Config::from_sources(Some(&example), &env(&vars), &Flags::default()).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.default_project.region, Region::Eu);
    assert_eq!(
        config.route(Some("brand-b"), None).credentials,
        Some(Credentials::service_account(
            "bridge.4d5e6f.mp-service-account",
            "brand-b-secret",
            "7654321"
        ))
    );
    assert!(!config.type_filter.allows("users.behaviors.Location"));

    // Its commented-out cohort import, uncommented, is valid too.
    let (before, cohorts) = EXAMPLE.split_once("# [cohorts]").unwrap();
    let uncommented: Vec<&str> = cohorts
        .lines()
        .map(|line| {
            line.strip_prefix("# ")
                .unwrap_or(line.trim_start_matches('#'))
        })
        .collect();
    let example = ConfigFile {
        path: PathBuf::from("docs/bridge.example.toml"),
        text: format!("{before}[cohorts]{}\n", uncommented.join("\n")),
    };
    let vars: Vec<_> = vars
        .into_iter()
        .chain([
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:pw"),
            ("BRAZE_REST_API_KEY", "braze-key"),
        ])
        .collect();
    let config = Config::from_sources(Some(&example), &env(&vars), &Flags::default()).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert!(config.cohorts.webhook.is_some());
    assert_eq!(
        config.cohorts.pull,
        Some(PullSchedule {
            cohort_ids: vec![1234, 5678],
            interval: Duration::from_secs(3600),
        })
    );
    let braze = config.cohorts.braze.expect("a Braze connection");
    assert_eq!(braze.instance, Instance::Us03);
}

#[test]
fn the_example_in_the_docs_is_the_example_file() {
    let example = CONFIGURATION_MD
        .split("## Example")
        .nth(1)
        .and_then(|section| section.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .unwrap_or_default();
    assert_eq!(example, EXAMPLE);
}

/// The data dir [`spool_only`](super::spool_only) finds.
fn data_dir_from_sources(
    file: Option<&ConfigFile>,
    env: &Env,
    flags: &Flags,
) -> Result<PathBuf, ConfigError> {
    spool_only::spool_only_from_sources(file, env, flags).map(|spool| spool.data_dir)
}

#[test]
fn spool_only_data_dir_takes_the_flag_then_the_variable_then_the_file_then_the_default() {
    let toml = file("data_dir = \"from-file\"\n");
    let flags = Flags {
        data_dir: Some(PathBuf::from("from-flag")),
        ..Flags::default()
    };
    let with_var = env(&[("BRIDGE_DATA_DIR", "from-env")]);
    let none = Env::default();
    let data_dir = |file: Option<&ConfigFile>, env: &Env, flags: &Flags| {
        data_dir_from_sources(file, env, flags).expect("a data dir")
    };
    assert_eq!(
        data_dir(Some(&toml), &with_var, &flags),
        Path::new("from-flag")
    );
    assert_eq!(
        data_dir(Some(&toml), &with_var, &Flags::default()),
        Path::new("from-env")
    );
    assert_eq!(
        data_dir(Some(&toml), &none, &Flags::default()),
        Path::new("from-file")
    );
    assert_eq!(
        data_dir(None, &none, &Flags::default()),
        Path::new("./bridge-data")
    );
}

#[test]
fn spool_only_data_dir_needs_no_token_or_credentials() {
    // No ingest token and no Mixpanel credentials: `load` refuses this.
    let toml = file("data_dir = \"/var/lib/bridge\"\n[ingest]\nmax_body_bytes = 1000000\n");
    assert!(Config::from_sources(Some(&toml), &Env::default(), &Flags::default()).is_err());
    assert_eq!(
        data_dir_from_sources(Some(&toml), &Env::default(), &Flags::default()).expect("a data dir"),
        Path::new("/var/lib/bridge")
    );
}

#[test]
fn spool_only_data_dir_rejects_an_empty_path_and_bad_toml() {
    let message = |toml: &str| {
        data_dir_from_sources(Some(&file(toml)), &Env::default(), &Flags::default())
            .expect_err("an error")
            .to_string()
    };
    assert_eq!(
        message("\n data_dir = \"\"\n"),
        "bridge.toml:2: data_dir: expected a directory, found an empty path"
    );
    assert!(message("data_dri = \"x\"\n").starts_with("bridge.toml:1:1: unknown field"));
    let flags = Flags {
        data_dir: Some(PathBuf::new()),
        ..Flags::default()
    };
    assert_eq!(
        data_dir_from_sources(None, &Env::default(), &flags)
            .expect_err("an error")
            .to_string(),
        "--data-dir: expected a directory, found an empty path"
    );
}

#[test]
fn spool_only_reads_the_backend_without_token_or_credentials() {
    // No ingest token and no Mixpanel credentials: `load` refuses this.
    let toml = file(
        "data_dir = \"/var/lib/bridge\"\n[spool]\nbackend = \"nats\"\nmax_bytes = 5000000\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nstream = \"acme-batches\"\n",
    );
    assert!(Config::from_sources(Some(&toml), &Env::default(), &Flags::default()).is_err());
    let spool =
        spool_only::spool_only_from_sources(Some(&toml), &Env::default(), &Flags::default())
            .expect("the spool's settings");
    assert_eq!(spool.data_dir, Path::new("/var/lib/bridge"));
    let SpoolBackend::Nats(nats) = &spool.backend else {
        panic!("{spool:?}");
    };
    assert_eq!(nats.servers, ["nats://127.0.0.1:4222"]);
    assert_eq!(nats.stream, "acme-batches");
    assert_eq!(nats.dead_letter_stream, "bridge-dead-letters");
    assert_eq!(nats.max_bytes, 5_000_000);

    // The environment and the flag override the file, as for `load`.
    let vars = env(&[
        ("BRIDGE_SPOOL", "sqlite"),
        ("BRIDGE_DATA_DIR", "from-env"),
        // Variables of other settings are not read: not even a bad one.
        ("BRIDGE_DELIVERY_WORKERS", "many"),
    ]);
    let spool = spool_only::spool_only_from_sources(Some(&toml), &vars, &Flags::default())
        .expect("the spool's settings");
    assert_eq!(spool.backend, SpoolBackend::Sqlite);
    assert_eq!(spool.data_dir, Path::new("from-env"));
    let flags = Flags {
        data_dir: Some(PathBuf::from("from-flag")),
        ..Flags::default()
    };
    let spool = spool_only::spool_only_from_sources(None, &vars, &flags).unwrap();
    assert_eq!(spool.data_dir, Path::new("from-flag"));
    let spool =
        spool_only::spool_only_from_sources(None, &Env::default(), &Flags::default()).unwrap();
    assert_eq!(spool.data_dir, Path::new("./bridge-data"));
    assert_eq!(spool.backend, SpoolBackend::Sqlite);

    let nats_env = env(&[
        ("BRIDGE_SPOOL", "nats"),
        ("BRIDGE_NATS_URLS", "nats://10.0.0.1:4222"),
        ("BRIDGE_NATS_DEAD_LETTER_STREAM", "acme-dead"),
    ]);
    let spool = spool_only::spool_only_from_sources(None, &nats_env, &Flags::default()).unwrap();
    let SpoolBackend::Nats(nats) = &spool.backend else {
        panic!("{spool:?}");
    };
    assert_eq!(nats.dead_letter_stream, "acme-dead");
}

#[test]
fn spool_only_errors_name_the_setting() {
    let message = |toml: &str, vars: &[(&str, &str)]| {
        spool_only::spool_only_from_sources(Some(&file(toml)), &env(vars), &Flags::default())
            .expect_err("an error")
            .to_string()
    };
    assert_eq!(
        message("\n data_dir = \"\"\n", &[]),
        "bridge.toml:2: data_dir: expected a directory, found an empty path"
    );
    assert!(message("data_dri = \"x\"\n", &[]).starts_with("bridge.toml:1:1: unknown field"));
    assert!(
        message("", &[("BRIDGE_SPOOL", "nats")]).contains("BRIDGE_NATS_URLS (or nats.servers)")
    );
    assert!(message("", &[("BRIDGE_SPOOL", "kafka")]).contains("sqlite or nats"));
    assert!(message("", &[("BRIDGE_SPOOL_MAX_BYTES", "0")]).contains("BRIDGE_SPOOL_MAX_BYTES"));
}

/// A Braze REST API key: with [`MINIMAL`], the least that turns the cohort
/// import on outside dry run.
const BRAZE_KEY: (&str, &str) = ("BRAZE_REST_API_KEY", "braze-rest-key-1");

#[test]
fn the_cohort_import_is_off_by_default() {
    let config = load(None, &env(&MINIMAL), &Flags::default()).unwrap();
    assert_eq!(
        config.cohorts,
        CohortsConfig {
            webhook: None,
            identity: IdentityRule::DistinctId,
            writer: CohortWriter::Attribute {
                attribute: "mixpanel_cohorts".to_owned(),
            },
            braze: None,
            pull: None,
        }
    );
    assert!(!config.cohorts.is_enabled());
    assert_eq!(config.cohorts.attribute(), "mixpanel_cohorts");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    // A Braze key with the import off is fine (`cohorts sync` uses it).
    let config = ok("", &[BRAZE_KEY]);
    assert!(!config.cohorts.is_enabled());
    let braze = config.cohorts.braze.as_ref().expect("a Braze connection");
    assert_eq!(braze.rest_api_key, Some(Secret::new("braze-rest-key-1")));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn the_cohort_webhook_from_the_environment() {
    let vars = [
        (
            "BRIDGE_COHORT_WEBHOOK_CREDENTIALS",
            " mixpanel:pw-1, rotated:pw:with:colons ,mixpanel:pw-1",
        ),
        BRAZE_KEY,
        ("BRAZE_INSTANCE", "US-03"),
    ];
    let config = ok("", &vars);
    assert!(config.cohorts.is_enabled());
    assert_eq!(
        config.cohorts.webhook,
        Some(CohortWebhookConfig {
            path: "/mixpanel/cohorts".to_owned(),
            credentials: vec![
                Secret::new("mixpanel:pw-1"),
                Secret::new("rotated:pw:with:colons")
            ],
            max_body_bytes: 8 * 1024 * 1024,
            max_members_per_page: 10_000,
        })
    );
    assert_eq!(
        config.cohorts.braze,
        Some(BrazeConfig {
            rest_api_key: Some(Secret::new("braze-rest-key-1")),
            instance: Instance::Us03,
            api_url: None,
            rate_limit: RateLimit::default(),
            request_timeout: Duration::from_secs(30),
        })
    );
    assert_eq!(config.cohorts.identity, IdentityRule::DistinctId);
    assert_eq!(config.cohorts.pull, None);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    let vars = [
        ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:pw"),
        ("BRIDGE_COHORT_WEBHOOK_PATH", "/hooks/mixpanel"),
        ("BRIDGE_COHORT_MAX_BODY_BYTES", "1024"),
        ("BRIDGE_COHORT_MAX_MEMBERS_PER_PAGE", "500"),
        ("BRIDGE_COHORT_IDENTITY", "property:$braze_external_id"),
        ("BRIDGE_COHORT_WRITER", "attribute"),
        ("BRIDGE_COHORT_ATTRIBUTE", "mp_cohorts"),
        ("BRIDGE_COHORT_PULL_INTERVAL_SECS", "900"),
        ("BRIDGE_COHORT_PULL_COHORTS", "12, 34,12"),
        BRAZE_KEY,
        ("BRAZE_INSTANCE", "rest.fra-02.braze.eu"),
        ("BRAZE_API_URL", "https://braze-proxy.invalid"),
        ("BRAZE_RATE_LIMIT_REQUESTS", "100"),
        ("BRAZE_RATE_LIMIT_WINDOW_SECS", "60"),
        ("BRAZE_REQUEST_TIMEOUT_SECS", "10"),
    ];
    let config = ok("", &vars);
    let webhook = config.cohorts.webhook.as_ref().expect("the webhook");
    assert_eq!(webhook.path, "/hooks/mixpanel");
    assert_eq!(webhook.max_body_bytes, 1024);
    assert_eq!(webhook.max_members_per_page, 500);
    assert_eq!(
        config.cohorts.identity,
        IdentityRule::Property("$braze_external_id".to_owned())
    );
    assert_eq!(config.cohorts.attribute(), "mp_cohorts");
    assert_eq!(
        config.cohorts.pull,
        Some(PullSchedule {
            cohort_ids: vec![12, 34],
            interval: Duration::from_secs(900),
        })
    );
    let braze = config.cohorts.braze.as_ref().expect("a Braze connection");
    assert_eq!(braze.instance, Instance::Eu02);
    assert_eq!(
        braze.api_url.as_deref(),
        Some("https://braze-proxy.invalid")
    );
    assert_eq!(
        braze.rate_limit,
        RateLimit {
            max_requests: 100,
            window: Duration::from_secs(60),
        }
    );
    assert_eq!(braze.request_timeout, Duration::from_secs(10));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    let rendering = config.to_redacted_toml();
    for expected in [
        "webhook_path = \"/hooks/mixpanel\"  # from BRIDGE_COHORT_WEBHOOK_PATH\n",
        "  \"[redacted] (from BRIDGE_COHORT_WEBHOOK_CREDENTIALS)\",\n",
        "max_members_per_page = 500  # from BRIDGE_COHORT_MAX_MEMBERS_PER_PAGE\n",
        "identity = \"property:$braze_external_id\"  # from BRIDGE_COHORT_IDENTITY\n",
        "attribute = \"mp_cohorts\"  # from BRIDGE_COHORT_ATTRIBUTE\n",
        "pull_interval_secs = 900  # from BRIDGE_COHORT_PULL_INTERVAL_SECS\n",
        "pull_cohorts = [12, 34]  # from BRIDGE_COHORT_PULL_COHORTS\n",
        "rest_api_key = \"[redacted] (from BRAZE_REST_API_KEY)\"\n",
        "instance = \"EU-02\"  # from BRAZE_INSTANCE\n",
        "rate_limit_window_secs = 60  # from BRAZE_RATE_LIMIT_WINDOW_SECS\n",
        "request_timeout_secs = 10  # from BRAZE_REQUEST_TIMEOUT_SECS\n",
    ] {
        assert!(rendering.contains(expected), "{expected} in {rendering}");
    }
}

#[test]
fn the_cohort_import_from_the_file() {
    let credentials = TempFile::new("# Mixpanel's cohort sync\nmixpanel:pw-1\n\n  backup:pw-2  \n");
    let toml = format!(
        r#"
[cohorts]
webhook_credentials_file = "{}"
max_members_per_page = 2000
identity = "email"
attribute = "cohorts_from_mixpanel"
pull_interval_secs = 3600
pull_cohorts = [5]

[braze]
rest_api_key = "braze-rest-key-from-file"
instance = "US-03"
rate_limit_requests = 50000
"#,
        credentials.path()
    );
    let config = ok(&toml, &[]);
    let cohorts = &config.cohorts;
    assert_eq!(
        cohorts.webhook,
        Some(CohortWebhookConfig {
            path: "/mixpanel/cohorts".to_owned(),
            credentials: vec![Secret::new("mixpanel:pw-1"), Secret::new("backup:pw-2")],
            max_body_bytes: 8 * 1024 * 1024,
            max_members_per_page: 2000,
        })
    );
    assert_eq!(cohorts.identity, IdentityRule::Email);
    assert_eq!(
        cohorts.writer,
        CohortWriter::Attribute {
            attribute: "cohorts_from_mixpanel".to_owned()
        }
    );
    assert_eq!(
        cohorts.pull,
        Some(PullSchedule {
            cohort_ids: vec![5],
            interval: Duration::from_secs(3600),
        })
    );
    assert_eq!(
        cohorts.braze,
        Some(BrazeConfig {
            rest_api_key: Some(Secret::new("braze-rest-key-from-file")),
            instance: Instance::Us03,
            api_url: None,
            rate_limit: RateLimit {
                max_requests: 50_000,
                window: Duration::from_secs(3),
            },
            request_timeout: Duration::from_secs(30),
        })
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    let rendering = config.to_redacted_toml();
    for expected in [
        format!("  \"[redacted] (from {} line 4)\",\n", credentials.path()),
        format!(
            "webhook_credentials_file = \"{}\"  # from bridge.toml:3; its credentials are listed above\n",
            credentials.path()
        ),
        "rest_api_key = \"[redacted] (from bridge.toml:11)\"\n".to_owned(),
        "instance = \"US-03\"  # from bridge.toml:12\n".to_owned(),
        "api_url: https://rest.iad-03.braze.com (the instance's endpoint)".to_owned(),
    ] {
        assert!(rendering.contains(&expected), "{expected} in {rendering}");
    }

    // Every key of the environment replaces the file's.
    let config = ok(
        &toml,
        &[
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "env:pw"),
            ("BRAZE_REST_API_KEY", "from-env"),
        ],
    );
    let webhook = config.cohorts.webhook.expect("the webhook");
    assert_eq!(webhook.credentials, [Secret::new("env:pw")]);
    let braze = config.cohorts.braze.expect("a Braze connection");
    assert_eq!(braze.rest_api_key, Some(Secret::new("from-env")));
}

#[test]
fn the_cohort_import_needs_a_braze_rest_api_key() {
    let vars = with_minimal(&[("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:pw")]);
    assert_eq!(
        error("", &vars),
        "cohort import is on (BRIDGE_COHORT_WEBHOOK_CREDENTIALS) but has no Braze REST API key: set BRAZE_REST_API_KEY, braze.rest_api_key or braze.rest_api_key_file"
    );
    assert_eq!(
        error("[cohorts]\npull_interval_secs = 600\n", &env(&MINIMAL)),
        "cohort import is on (bridge.toml:2: cohorts.pull_interval_secs) but has no Braze REST API key: set BRAZE_REST_API_KEY, braze.rest_api_key or braze.rest_api_key_file"
    );

    // In dry run the Braze requests go to a file: no key needed.
    let config = ok(
        "",
        &[
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:pw"),
            ("BRIDGE_DRY_RUN", "1"),
        ],
    );
    assert!(config.cohorts.is_enabled());
    assert_eq!(config.cohorts.braze, None);
}

#[test]
fn the_partner_writer_needs_its_keys() {
    let data_import_key = TempFile::new("data-import-key-from-file\n");
    let vars = [
        ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:pw"),
        ("BRIDGE_COHORT_WRITER", "partner"),
        ("BRAZE_PARTNER_NAME", "acme_cdp"),
        ("BRAZE_PARTNER_API_KEY", "partner-key"),
    ];
    assert_eq!(
        error("", &with_minimal(&vars)),
        "BRIDGE_COHORT_WRITER = partner needs BRAZE_DATA_IMPORT_KEY (or braze.data_import_key or braze.data_import_key_file)"
    );
    assert_eq!(
        error("[cohorts]\nwriter = \"partner\"\n", &env(&MINIMAL)),
        "bridge.toml:2: cohorts.writer = partner needs BRAZE_PARTNER_NAME (or braze.partner_name)"
    );
    assert_eq!(
        error(
            "[cohorts]\nwriter = \"partner\"\n[braze]\npartner_name = \"acme\"\n",
            &env(&MINIMAL)
        ),
        "bridge.toml:2: cohorts.writer = partner needs BRAZE_PARTNER_API_KEY (or braze.partner_api_key or braze.partner_api_key_file)"
    );

    // Complete, the partner writer needs no REST key.
    let vars: Vec<_> = vars
        .into_iter()
        .chain([("BRAZE_DATA_IMPORT_KEY_FILE", data_import_key.path())])
        .collect();
    let config = ok("", &vars);
    assert_eq!(
        config.cohorts.writer,
        CohortWriter::Partner {
            partner_name: "acme_cdp".to_owned(),
            partner_api_key: Secret::new("partner-key"),
            data_import_key: Secret::new("data-import-key-from-file"),
        }
    );
    let braze = config.cohorts.braze.as_ref().expect("a Braze connection");
    assert_eq!(braze.rest_api_key, None);
    assert_eq!(braze.instance, Instance::Us01);
    assert_eq!(config.cohorts.attribute(), "mixpanel_cohorts");

    // The partner API takes external ids only.
    let with_email: Vec<_> = vars
        .iter()
        .copied()
        .chain([("BRIDGE_COHORT_IDENTITY", "email")])
        .collect();
    assert_eq!(
        error("", &with_minimal(&with_email)),
        "BRIDGE_COHORT_IDENTITY: expected mixpanel_distinct_id or property:<name> with the partner writer (Braze's partner cohort API takes external ids only), found \"email\""
    );
}

#[test]
fn cohort_value_errors_name_the_setting_and_what_it_takes() {
    const WEBHOOK: (&str, &str) = ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:pw");
    let cases: &[ErrorCase] = &[
        (
            "",
            &[("BRAZE_INSTANCE", "US-09")],
            "BRAZE_INSTANCE: expected a Braze instance: one of US-01, US-02, US-03, US-04, US-05, US-06, US-07, US-08, US-10, EU-01, EU-02, AU-01, JP-01, ID-01, KR-01, found \"US-09\"",
        ),
        (
            "[cohorts]\nidentity = \"external_id\"\n",
            &[],
            "bridge.toml:2: cohorts.identity: expected mixpanel_distinct_id, email or property:<name>, found \"external_id\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_IDENTITY", "property:")],
            "BRIDGE_COHORT_IDENTITY: expected mixpanel_distinct_id, email or property:<name>, found \"property:\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_WRITER", "cohorts")],
            "BRIDGE_COHORT_WRITER: expected attribute or partner, found \"cohorts\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_WEBHOOK_PATH", "mixpanel/cohorts")],
            "BRIDGE_COHORT_WEBHOOK_PATH: expected a path starting with / without ?, #, *, :, {, } or spaces, found \"mixpanel/cohorts\"",
        ),
        (
            "[cohorts]\nwebhook_path = \"/mixpanel/{cohort}\"\n",
            &[],
            "bridge.toml:2: cohorts.webhook_path: expected a path starting with / without ?, #, *, :, {, } or spaces, found \"/mixpanel/{cohort}\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_WEBHOOK_PATH", "/hook?token=1")],
            "BRIDGE_COHORT_WEBHOOK_PATH: expected a path starting with / without ?, #, *, :, {, } or spaces, found \"/hook?token=1\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_WEBHOOK_PATH", "/a b")],
            "BRIDGE_COHORT_WEBHOOK_PATH: expected a path starting with / without ?, #, *, :, {, } or spaces, found \"/a b\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_WEBHOOK_PATH", "/hooks/:id")],
            "BRIDGE_COHORT_WEBHOOK_PATH: expected a path starting with / without ?, #, *, :, {, } or spaces, found \"/hooks/:id\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_WEBHOOK_PATH", "/currents")],
            "BRIDGE_COHORT_WEBHOOK_PATH: expected a path other than the bridge's own (/currents, /healthz, /readyz, /status, /metrics), found \"/currents\"",
        ),
        (
            "[cohorts]\nwebhook_path = \"/metrics\"\n",
            &[],
            "bridge.toml:2: cohorts.webhook_path: expected a path other than the bridge's own (/currents, /healthz, /readyz, /status, /metrics), found \"/metrics\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_ATTRIBUTE", "email")],
            "BRIDGE_COHORT_ATTRIBUTE: expected a custom attribute name of 1 to 255 bytes, not starting with $ and other than external_id, email, _update_existing_only, user_alias, braze_id, found \"email\"",
        ),
        (
            "[cohorts]\nattribute = \"$cohorts\"\n",
            &[],
            "bridge.toml:2: cohorts.attribute: expected a custom attribute name of 1 to 255 bytes, not starting with $ and other than external_id, email, _update_existing_only, user_alias, braze_id, found \"$cohorts\"",
        ),
        (
            "[cohorts]\nattribute = \"\"\n",
            &[],
            "bridge.toml:2: cohorts.attribute: expected a custom attribute name of 1 to 255 bytes, not starting with $ and other than external_id, email, _update_existing_only, user_alias, braze_id, found an empty string",
        ),
        (
            "",
            &[("BRIDGE_COHORT_PULL_INTERVAL_SECS", "59"), BRAZE_KEY],
            "BRIDGE_COHORT_PULL_INTERVAL_SECS: expected an integer of at least 60, found 59",
        ),
        (
            "[cohorts]\npull_interval_secs = 0\n",
            &[],
            "bridge.toml:2: cohorts.pull_interval_secs: expected an integer of at least 60, found 0",
        ),
        (
            "",
            &[("BRIDGE_COHORT_PULL_COHORTS", "12,abc")],
            "BRIDGE_COHORT_PULL_COHORTS: expected comma-separated non-negative integers, found \"abc\"",
        ),
        (
            "",
            &[("BRIDGE_COHORT_MAX_BODY_BYTES", "1023")],
            "BRIDGE_COHORT_MAX_BODY_BYTES: expected an integer of at least 1024, found 1023",
        ),
        (
            "",
            &[("BRIDGE_COHORT_MAX_MEMBERS_PER_PAGE", "1000001")],
            "BRIDGE_COHORT_MAX_MEMBERS_PER_PAGE: expected an integer from 1 to 1000000, found 1000001",
        ),
        (
            "",
            &[("BRAZE_RATE_LIMIT_WINDOW_SECS", "3601")],
            "BRAZE_RATE_LIMIT_WINDOW_SECS: expected an integer from 1 to 3600, found 3601",
        ),
        (
            "",
            &[("BRAZE_RATE_LIMIT_REQUESTS", "0")],
            "BRAZE_RATE_LIMIT_REQUESTS: expected an integer from 1 to 1000000, found 0",
        ),
        (
            "",
            &[("BRAZE_REQUEST_TIMEOUT_SECS", "0")],
            "BRAZE_REQUEST_TIMEOUT_SECS: expected a positive integer, found 0",
        ),
        (
            "[braze]\napi_url = \"rest.iad-03.braze.com\"\n",
            &[],
            "bridge.toml:2: braze.api_url: expected an http:// or https:// URL, found \"rest.iad-03.braze.com\"",
        ),
        (
            "",
            &[("BRAZE_PARTNER_NAME", "acme cdp")],
            "BRAZE_PARTNER_NAME: expected a partner name of letters, digits, - and _, found \"acme cdp\"",
        ),
        (
            "",
            &[
                WEBHOOK,
                ("BRIDGE_COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED", "1"),
            ],
            "BRIDGE_COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED and BRIDGE_COHORT_WEBHOOK_CREDENTIALS are both set: set only one",
        ),
        (
            "",
            &[
                WEBHOOK,
                ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE", "/run/credentials"),
            ],
            "BRIDGE_COHORT_WEBHOOK_CREDENTIALS and BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE are both set: set only one",
        ),
        (
            "[cohorts]\nwebhook_credentials = [\"a:b\"]\nwebhook_credentials_file = \"/run/credentials\"\n",
            &[],
            "bridge.toml:2: cohorts.webhook_credentials and bridge.toml:3: cohorts.webhook_credentials_file are both set: set only one",
        ),
        (
            "[cohorts]\nwebhook_credentials = []\n",
            &[],
            "bridge.toml:2: cohorts.webhook_credentials: expected at least one user:password (leave the key out to turn the webhook off), found none",
        ),
        (
            "",
            &[
                ("BRAZE_REST_API_KEY", "k"),
                ("BRAZE_REST_API_KEY_FILE", "/run/braze"),
            ],
            "BRAZE_REST_API_KEY and BRAZE_REST_API_KEY_FILE are both set: set only one",
        ),
        (
            "[braze]\ndata_import_key = \" \"\n",
            &[],
            "bridge.toml:2: braze.data_import_key: expected a secret, found an empty string",
        ),
    ];
    for (toml, vars, expected) in cases {
        assert_eq!(
            error(toml, &with_minimal(vars)),
            *expected,
            "{toml} {vars:?}"
        );
    }

    let flags = Flags {
        listen: Some("0.0.0.0:8080".to_owned()),
        ..Flags::default()
    };
    assert_eq!(
        error_with_flags(
            "[cohorts]\nwebhook_allow_unauthenticated = true\n",
            &with_minimal(&[BRAZE_KEY]),
            &flags
        ),
        "bridge.toml:2: cohorts.webhook_allow_unauthenticated: expected a loopback listen address with it (it is for local tests only), found 0.0.0.0:8080"
    );
}

#[test]
fn webhook_credential_errors_never_show_the_credential() {
    let cases = [
        ("SECRET-no-colon", "a credential without ':'"),
        (":SECRET-no-user", "a credential with an empty user"),
        ("SECRET-no-password:", "a credential with an empty password"),
    ];
    for (credential, found) in cases {
        let vars = [("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", credential), BRAZE_KEY];
        let message = error("", &with_minimal(&vars));
        assert_eq!(
            message,
            format!(
                "BRIDGE_COHORT_WEBHOOK_CREDENTIALS: expected user:password credentials with a non-empty user and password, found {found}"
            )
        );
        assert!(!message.contains("SECRET"), "{message}");

        let toml = format!("[cohorts]\nwebhook_credentials = [\"ok:pw\", \"{credential}\"]\n");
        let message = error(&toml, &with_minimal(&[BRAZE_KEY]));
        assert!(
            message
                .starts_with("bridge.toml:2: cohorts.webhook_credentials: expected user:password"),
            "{message}"
        );
        assert!(!message.contains("SECRET"), "{message}");
    }

    let file = TempFile::new("ok:pw\n# a comment\nSECRET-no-colon\n");
    let vars = [
        ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE", file.path()),
        BRAZE_KEY,
    ];
    let message = error("", &with_minimal(&vars));
    assert_eq!(
        message,
        format!(
            "BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE ({} line 3): expected user:password credentials with a non-empty user and password, found a credential without ':'",
            file.path()
        )
    );
    let empty = TempFile::new("# nothing yet\n\n");
    let vars = [
        ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE", empty.path()),
        BRAZE_KEY,
    ];
    assert_eq!(
        error("", &with_minimal(&vars)),
        format!(
            "BRIDGE_COHORT_WEBHOOK_CREDENTIALS_FILE ({}): expected at least one user:password, one per line, found none",
            empty.path()
        )
    );
    let toml = "[cohorts]\nwebhook_credentials = \"SECRET-a-string\"\n";
    let message = error(toml, &with_minimal(&[BRAZE_KEY]));
    assert!(!message.contains("SECRET"), "{message}");
}

#[test]
fn an_unauthenticated_cohort_webhook_is_explicit_and_local() {
    let vars = [
        ("BRIDGE_COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED", "true"),
        ("BRIDGE_DRY_RUN", "1"),
    ];
    let config = ok("", &vars);
    let webhook = config.cohorts.webhook.as_ref().expect("the webhook");
    assert!(webhook.credentials.is_empty());
    assert_eq!(
        config.warnings(),
        [
            "the cohort webhook accepts requests without credentials (cohorts.webhook_allow_unauthenticated): for local tests only"
        ]
    );
    let rendering = config.to_redacted_toml();
    assert!(
        rendering.contains(
            "webhook_allow_unauthenticated = true  # from BRIDGE_COHORT_WEBHOOK_ALLOW_UNAUTHENTICATED\n"
        ),
        "{rendering}"
    );
}

#[test]
fn cohorts_only_needs_no_currents_token() {
    let vars = env(&[("MIXPANEL_PROJECT_TOKEN", "p"), BRAZE_KEY]);
    let error = load(None, &vars, &Flags::default()).unwrap_err();
    assert!(matches!(error, ConfigError::NoTokens), "{error:?}");

    let flags = Flags {
        cohorts_only: true,
        ..Flags::default()
    };
    let config = load(None, &vars, &flags).unwrap();
    assert_eq!(config.ingest.auth, IngestAuth::Unauthenticated);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(
        config.cohorts.braze.and_then(|braze| braze.rest_api_key),
        Some(Secret::new("braze-rest-key-1"))
    );
    // Tokens that are set are still taken, and everything else still checked.
    let config = load(None, &env(&MINIMAL), &flags).unwrap();
    assert_eq!(
        config.ingest.auth,
        IngestAuth::Tokens(vec![Secret::new("currents-token-1")])
    );
    assert!(
        error_with_flags("", &env(&[]), &flags)
            .starts_with("project \"default\" has no Mixpanel credentials"),
    );
    assert!(
        error_with_flags(
            "",
            &env(&[("MIXPANEL_PROJECT_TOKEN", "p"), ("BRAZE_INSTANCE", "mars")]),
            &flags
        )
        .starts_with("BRAZE_INSTANCE: expected a Braze instance"),
    );
}

#[test]
fn cohort_secrets_never_show_in_the_rendering_debug_or_errors() {
    let credentials = TempFile::new("mixpanel:SECRET-credential-file\n");
    let partner_key = TempFile::new("SECRET-partner-key-file\n");
    let toml = format!(
        r#"
[cohorts]
webhook_credentials_file = "{}"
writer = "partner"

[braze]
rest_api_key = "SECRET-rest-key"
partner_name = "acme"
partner_api_key_file = "{}"
"#,
        credentials.path(),
        partner_key.path()
    );
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS", "SECRET-token"),
        ("MIXPANEL_PROJECT_TOKEN", "SECRET-project-token"),
        ("BRAZE_DATA_IMPORT_KEY", "SECRET-data-import-key"),
    ];
    let config = load(Some(&toml), &env(&vars), &Flags::default()).unwrap();
    let rendering = config.to_redacted_toml();
    let debug = format!("{config:?}");
    let warnings = config.warnings().join("\n");
    for shown in [&rendering, &debug, &warnings] {
        assert!(!shown.contains("SECRET-"), "{shown}");
    }
    for expected in [
        format!("  \"[redacted] (from {} line 1)\",\n", credentials.path()),
        "rest_api_key = \"[redacted] (from bridge.toml:7)\"\n".to_owned(),
        format!(
            "partner_api_key = \"[redacted] (from {}, named by bridge.toml:9)\"\n",
            partner_key.path()
        ),
        "data_import_key = \"[redacted] (from BRAZE_DATA_IMPORT_KEY)\"\n".to_owned(),
        "partner_name = \"acme\"  # from bridge.toml:8\n".to_owned(),
        "writer = \"partner\"  # from bridge.toml:4\n".to_owned(),
    ] {
        assert!(rendering.contains(&expected), "{expected} in {rendering}");
    }
    assert!(rendering.contains("[redacted]"), "{rendering}");

    // The same from the environment, the credentials as a list.
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS", "SECRET-token"),
        ("MIXPANEL_PROJECT_TOKEN", "SECRET-project-token"),
        (
            "BRIDGE_COHORT_WEBHOOK_CREDENTIALS",
            "a:SECRET-credential-1,b:SECRET-credential-2",
        ),
        ("BRAZE_REST_API_KEY", "SECRET-rest-key"),
    ];
    let config = load(None, &env(&vars), &Flags::default()).unwrap();
    let rendering = config.to_redacted_toml();
    assert!(!rendering.contains("SECRET-"), "{rendering}");
    assert!(!format!("{config:?}").contains("SECRET-"));
    assert_eq!(
        rendering
            .matches("\"[redacted] (from BRIDGE_COHORT_WEBHOOK_CREDENTIALS)\",")
            .count(),
        2,
        "{rendering}"
    );
    assert!(
        rendering.contains("rest_api_key = \"[redacted] (from BRAZE_REST_API_KEY)\"\n"),
        "{rendering}"
    );
    if let Err(error) = raw::RawConfig::from_toml(&rendering) {
        panic!("{error}\n{rendering}");
    }
}

#[test]
fn cohort_warnings() {
    let config = ok(
        "",
        &[
            ("BRAZE_FOO", "1"),
            ("BRIDGE_COHORT_WEBHOOK_PAHT", "/x"),
            ("BRIDGE_COHORT_PULL_COHORTS", "1,2"),
        ],
    );
    assert_eq!(
        config.warnings(),
        [
            "BRAZE_FOO is not a configuration variable and is ignored",
            "BRIDGE_COHORT_WEBHOOK_PAHT is not a configuration variable and is ignored",
            "BRIDGE_COHORT_PULL_COHORTS is set but unused: there is no pull schedule without cohorts.pull_interval_secs (BRIDGE_COHORT_PULL_INTERVAL_SECS)",
        ]
    );
    assert_eq!(config.cohorts.pull, None);

    // Every variable of [cohorts] and [braze] is known.
    for variable in keys::COHORT_KEYS
        .iter()
        .map(|key| key.env)
        .chain(keys::INT_KEYS.iter().map(|key| key.env))
    {
        let warnings = raw::RawConfig::default()
            .overlay_env(&env(&[(variable, "1")]))
            .unwrap();
        assert!(warnings.is_empty(), "{variable}: {warnings:?}");
    }

    // Plain http to a remote host sends the keys in clear text.
    let config = ok(
        "",
        &[
            BRAZE_KEY,
            ("BRAZE_API_URL", "http://braze-proxy.internal:8080"),
        ],
    );
    assert_eq!(
        config.warnings(),
        [
            "BRAZE_API_URL is plain http to a host other than loopback: the Braze API keys travel in clear text"
        ]
    );
    for url in [
        "http://127.0.0.1:3000",
        "http://localhost:3000/",
        "http://[::1]:3000",
        "https://braze-proxy.internal",
    ] {
        let config = ok("", &[BRAZE_KEY, ("BRAZE_API_URL", url)]);
        assert!(
            config.warnings().is_empty(),
            "{url}: {:?}",
            config.warnings()
        );
    }
}

#[test]
fn operations_endpoints_listen_apart_unless_told_otherwise() {
    let config = ok("", &[]);
    assert_eq!(
        config.ops,
        OpsListener::Address("127.0.0.1:9090".parse().unwrap())
    );
    let config = ok("", &[("BRIDGE_OPS_ON_INGEST_LISTENER", "true")]);
    assert_eq!(config.ops, OpsListener::IngestListener);
    let config = ok("ops_listen = \"127.0.0.1:9191\"\n", &[]);
    assert_eq!(
        config.ops,
        OpsListener::Address("127.0.0.1:9191".parse().unwrap())
    );
    let message = error(
        "ops_listen = \"127.0.0.1:9191\"\n",
        &with_minimal(&[("BRIDGE_OPS_ON_INGEST_LISTENER", "true")]),
    );
    assert!(message.contains("are both set"), "{message}");
    let message = error(
        "listen = \"127.0.0.1:8080\"\nops_listen = \"127.0.0.1:8080\"\n",
        &with_minimal(&[]),
    );
    assert!(
        message.contains("an address other than listen's"),
        "{message}"
    );
    let config = ok("ops_listen = \"0.0.0.0:9090\"\n", &[]);
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("is not a loopback address")),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn a_short_currents_token_is_warned_about() {
    let config = load(
        None,
        &env(&[
            (
                "BRIDGE_CURRENTS_TOKENS",
                "short,a-long-enough-currents-token",
            ),
            ("MIXPANEL_PROJECT_TOKEN", "project-token-1"),
        ]),
        &Flags::default(),
    )
    .unwrap();
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("1 Currents token(s) shorter than 16")),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn tls_needs_both_files_and_plain_http_outside_loopback_is_warned_about() {
    let message = error(
        "[tls]\ncert_file = \"/etc/bridge/cert.pem\"\n",
        &with_minimal(&[]),
    );
    assert!(message.contains("tls.key_file"), "{message}");
    let config = ok(
        "[tls]\ncert_file = \"/etc/bridge/cert.pem\"\nkey_file = \"/etc/bridge/key.pem\"\n",
        &[],
    );
    assert_eq!(
        config.tls,
        Some(TlsConfig {
            cert_file: PathBuf::from("/etc/bridge/cert.pem"),
            key_file: PathBuf::from("/etc/bridge/key.pem"),
        })
    );
    assert!(config.to_redacted_toml().contains("[tls]"));
    let config = ok("listen = \"0.0.0.0:8080\"\n", &[]);
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("serves plain HTTP")),
        "{:?}",
        config.warnings()
    );
    let config = ok(
        "",
        &[("MIXPANEL_API_URL", "http://mixpanel-proxy.internal:8080")],
    );
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("travel in clear text")),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn an_extra_ca_file_must_hold_pem_certificates() {
    let not_pem = TempFile::new("just text\n");
    let message = error(
        "",
        &with_minimal(&[("BRIDGE_EXTRA_CA_FILE", not_pem.path())]),
    );
    assert!(message.contains("PEM certificates"), "{message}");
    let pem = TempFile::new("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let config = ok("", &[("BRIDGE_EXTRA_CA_FILE", pem.path())]);
    assert!(config.extra_ca.is_some());
    assert!(config.to_redacted_toml().contains("extra_ca_file"));
}

#[test]
fn every_documented_variable_is_known() {
    let docs = include_str!("../../../../docs/configuration.md");
    let mut names: Vec<&str> = docs
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| word.starts_with("BRIDGE_") || word.starts_with("BRAZE_"))
        .filter(|word| !word.ends_with('_'))
        .filter(|word| !word.starts_with(super::keys::PROJECT_VAR_PREFIX))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() > 40, "too few variables found: {names:?}");
    let env: Env = names.iter().map(|name| (*name, "1")).collect();
    assert_eq!(super::raw::unknown_variables(&env), Vec::<String>::new());
}

#[test]
fn the_spool_is_sqlite_unless_nats_is_asked_for() {
    let config = ok("", &[]);
    assert_eq!(config.spool.backend, SpoolBackend::Sqlite);
    let config = ok("", &[("BRIDGE_NATS_URLS", "nats://127.0.0.1:4222")]);
    assert_eq!(config.spool.backend, SpoolBackend::Sqlite);
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("BRIDGE_NATS_URLS is set but unused")),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn nats_from_the_environment_alone() {
    let config = ok(
        "",
        &[
            ("BRIDGE_SPOOL", "nats"),
            (
                "BRIDGE_NATS_URLS",
                "nats://10.0.0.1:4222, nats://10.0.0.2:4222",
            ),
            ("BRIDGE_NATS_REPLICAS", "3"),
            ("BRIDGE_SPOOL_MAX_BYTES", "1073741824"),
        ],
    );
    let SpoolBackend::Nats(nats) = &config.spool.backend else {
        panic!("{:?}", config.spool.backend);
    };
    assert_eq!(
        nats.servers,
        ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    );
    assert_eq!(nats.replicas, 3);
    assert_eq!(nats.max_bytes, 1 << 30);
    assert_eq!(nats.auth, crate::nats::NatsAuth::None);
    assert_eq!(nats.stream, "bridge-batches");
    let rendered = config.to_redacted_toml();
    assert!(
        rendered.contains("backend = \"nats\"  # from BRIDGE_SPOOL"),
        "{rendered}"
    );
    assert!(
        rendered.contains("replicas = 3  # from BRIDGE_NATS_REPLICAS"),
        "{rendered}"
    );
}

#[test]
fn nats_settings_from_the_file_with_credentials_kept_secret() {
    let toml = r#"
[spool]
backend = "nats"
[nats]
servers = ["tls://nats.internal:4222"]
user = "bridge"
stream = "CURRENTS"
subject_prefix = "acme.currents"
consumer = "to-mixpanel"
dead_letter_stream = "CURRENTS_DLQ"
duplicate_window_secs = 600
publish_timeout_ms = 2000
"#;
    let config = ok(toml, &[("BRIDGE_NATS_PASSWORD", "pa55-word-value")]);
    let SpoolBackend::Nats(nats) = &config.spool.backend else {
        panic!("{:?}", config.spool.backend);
    };
    assert_eq!(
        nats.auth,
        crate::nats::NatsAuth::UserPassword {
            user: "bridge".to_owned(),
            password: Secret::new("pa55-word-value"),
        }
    );
    assert_eq!(nats.subject_prefix, "acme.currents");
    assert_eq!(nats.duplicate_window, Duration::from_secs(600));
    assert_eq!(nats.publish_timeout, Duration::from_millis(2000));
    for printed in [format!("{config:?}"), config.to_redacted_toml()] {
        assert!(!printed.contains("pa55-word-value"), "{printed}");
    }
    assert!(
        config
            .to_redacted_toml()
            .contains("password = \"[redacted] (from BRIDGE_NATS_PASSWORD)\"")
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn nats_errors_name_the_setting() {
    let nats = |vars: &[(&str, &str)]| {
        let mut all = vec![("BRIDGE_SPOOL", "nats")];
        all.extend_from_slice(vars);
        error("", &with_minimal(&all))
    };
    assert!(
        nats(&[]).contains("BRIDGE_NATS_URLS (or nats.servers)"),
        "{}",
        nats(&[])
    );
    let message = nats(&[("BRIDGE_NATS_URLS", "http://x:4222")]);
    assert!(
        message.contains("BRIDGE_NATS_URLS") && message.contains("\"http://x:4222\""),
        "{message}"
    );
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_REPLICAS", "2"),
    ]);
    assert!(
        message.contains("BRIDGE_NATS_REPLICAS") && message.contains("odd"),
        "{message}"
    );
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_STREAM", "my.stream"),
    ]);
    assert!(message.contains("BRIDGE_NATS_STREAM"), "{message}");
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_TOKEN", "t0ken-value"),
        ("BRIDGE_NATS_USER", "bridge"),
    ]);
    assert!(
        message.contains("BRIDGE_NATS_USER") && message.contains("BRIDGE_NATS_TOKEN"),
        "{message}"
    );
    assert!(!message.contains("t0ken-value"), "{message}");
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_USER", "bridge"),
    ]);
    assert!(message.contains("BRIDGE_NATS_PASSWORD"), "{message}");
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_NKEY_SEED", "not-a-seed-value"),
    ]);
    assert!(
        message.contains("SU") && !message.contains("not-a-seed-value"),
        "{message}"
    );
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_TLS_REQUIRED", "true"),
    ]);
    assert!(message.contains("tls://"), "{message}");
    let message = nats(&[
        ("BRIDGE_NATS_URLS", "nats://a:4222"),
        ("BRIDGE_NATS_DEAD_LETTER_STREAM", "bridge-batches"),
    ]);
    assert!(message.contains("nats.dead_letter_stream"), "{message}");
    assert!(error("[spool]\nbackend = \"kafka\"\n", &with_minimal(&[])).contains("sqlite or nats"));
}

#[test]
fn nats_credentials_in_clear_text_are_warned_about() {
    let config = ok(
        "",
        &[
            ("BRIDGE_SPOOL", "nats"),
            ("BRIDGE_NATS_URLS", "nats://nats.example.com:4222"),
            ("BRIDGE_NATS_TOKEN", "t0ken-value"),
        ],
    );
    assert!(
        config
            .warnings()
            .iter()
            .any(|warning| warning.contains("clear text")),
        "{:?}",
        config.warnings()
    );
    let loopback = ok(
        "",
        &[
            ("BRIDGE_SPOOL", "nats"),
            ("BRIDGE_NATS_URLS", "nats://127.0.0.1:4222"),
            ("BRIDGE_NATS_TOKEN", "t0ken-value"),
        ],
    );
    assert!(loopback.warnings().is_empty(), "{:?}", loopback.warnings());
}

#[test]
fn the_body_cap_follows_the_spools_room_unless_set() {
    use super::BodyCap;
    let default = ok("", &[]);
    assert!(!default.max_body_bytes_is_set());
    // SQLite has no room of its own: the setting (here its default) holds.
    assert_eq!(
        default.ingest_body_cap(None),
        BodyCap {
            bytes: 16 * 1024 * 1024,
            lowered_from_setting: false
        }
    );
    // NATS with 1 MiB of max_payload: the default follows it, quietly.
    assert_eq!(
        default.ingest_body_cap(Some(1_047_552)),
        BodyCap {
            bytes: 1_047_552,
            lowered_from_setting: false
        }
    );
    // Set above the room: lowered, and said so.
    let set = ok("[ingest]\nmax_body_bytes = 4000000\n", &[]);
    assert!(set.max_body_bytes_is_set());
    assert_eq!(
        set.ingest_body_cap(Some(1_047_552)),
        BodyCap {
            bytes: 1_047_552,
            lowered_from_setting: true
        }
    );
    // Set below it: the setting.
    let small = ok("", &[("BRIDGE_MAX_BODY_BYTES", "500000")]);
    assert_eq!(
        small.ingest_body_cap(Some(1_047_552)),
        BodyCap {
            bytes: 500_000,
            lowered_from_setting: false
        }
    );
}

#[test]
fn the_archive_is_off_unless_a_location_is_set() {
    let config = ok("", &[]);
    assert_eq!(config.archive, None);
    assert!(
        config.to_redacted_toml().contains(
            "\n[archive]\n# url: none (no archive: a batch is not kept once delivered)\n"
        ),
        "{}",
        config.to_redacted_toml()
    );

    let config = ok("[archive]\nurl = \"/var/lib/bridge-archive\"\n", &[]);
    assert_eq!(
        config.archive,
        Some(ArchiveConfig {
            url: "/var/lib/bridge-archive".to_owned()
        })
    );
    assert!(
        config
            .to_redacted_toml()
            .contains("\n[archive]\nurl = \"/var/lib/bridge-archive\"  # from bridge.toml:2\n"),
        "{}",
        config.to_redacted_toml()
    );

    // The variable wins over the file.
    let config = ok(
        "[archive]\nurl = \"/var/lib/bridge-archive\"\n",
        &[("BRIDGE_ARCHIVE_URL", " s3://acme-currents/bridge ")],
    );
    assert_eq!(
        config.archive.unwrap().url,
        "s3://acme-currents/bridge",
        "trimmed"
    );
    for url in [
        "./archive",
        "file:///var/lib/bridge-archive",
        "s3://acme-currents/bridge",
        "S3://acme-currents",
        "gs://acme-currents/bridge",
        "az://currents/bridge",
        "abfss://currents@acme.dfs.core.windows.net/bridge",
        "https://acme.blob.core.windows.net/currents/bridge",
    ] {
        let config = ok("", &[("BRIDGE_ARCHIVE_URL", url)]);
        assert_eq!(config.archive.unwrap().url, url);
    }
}

#[test]
fn an_archive_location_that_cannot_be_one_is_refused_without_showing_a_secret() {
    const EXPECTED: &str = "a directory, or a file://, s3://, gs:// or az:// URL without user info or query string (credentials come from the environment)";
    let cases: &[ErrorCase] = &[
        ("[archive]\nurl = \"  \"\n", &[], "an empty string"),
        (
            "",
            &[("BRIDGE_ARCHIVE_URL", "ftp://acme/x")],
            "a URL of scheme \"ftp\"",
        ),
        (
            "",
            &[(
                "BRIDGE_ARCHIVE_URL",
                "s3://AKIA:s3cr3t@acme-currents/bridge",
            )],
            "a URL with user info",
        ),
        (
            "",
            &[(
                "BRIDGE_ARCHIVE_URL",
                "abfss://currents:s3cr3t@acme.dfs.core.windows.net/x",
            )],
            "a URL with user info",
        ),
        (
            "",
            &[(
                "BRIDGE_ARCHIVE_URL",
                "https://acme.blob.core.windows.net/currents?sv=2024&sig=s3cr3t",
            )],
            "a URL with a query string or fragment",
        ),
    ];
    for (toml, vars, found) in cases {
        let message = error(toml, &with_minimal(vars));
        let setting = if vars.is_empty() {
            "bridge.toml:2: archive.url"
        } else {
            "BRIDGE_ARCHIVE_URL"
        };
        assert_eq!(
            message,
            format!("{setting}: expected {EXPECTED}, found {found}"),
            "{vars:?}"
        );
        assert!(!message.contains("s3cr3t"), "{message}");
    }
    assert!(
        error("[archive]\nbucket = \"acme\"\n", &with_minimal(&[]))
            .contains("unknown field `bucket`")
    );
}

#[test]
fn with_an_archive_the_lease_also_covers_the_archive_step() {
    // 480 s is the worst case of one request with the defaults: enough
    // without an archive, 60 s short with one.
    let lease = ("BRIDGE_DELIVERY_LEASE_SECS", "480");
    assert_eq!(ok("", &[lease]).delivery.lease, Duration::from_secs(480));
    assert_eq!(
        error(
            "",
            &with_minimal(&[lease, ("BRIDGE_ARCHIVE_URL", "/archive")])
        ),
        "BRIDGE_DELIVERY_LEASE_SECS: expected at least 540, the worst case of one request: (delivery.max_retries + 1) × delivery.request_timeout_secs + delivery.max_retries × delivery.retry_max_backoff_secs + 60 s for the archive writes (archive.url is set), found 480"
    );
    // The default lease covers both.
    let config = ok("", &[("BRIDGE_ARCHIVE_URL", "/archive")]);
    assert_eq!(config.delivery.lease, Duration::from_secs(600));
}

#[test]
fn the_example_archive_uncommented_is_valid() {
    let text = EXAMPLE.replace("# [archive]\n# url = ", "[archive]\nurl = ");
    assert_ne!(text, EXAMPLE, "the example has a commented [archive]");
    let tokens = TempFile::new("currents-token-old\ncurrents-token-new\n");
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS_FILE", tokens.path()),
        ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "sa-secret"),
        ("MIXPANEL_PROJECT_TOKEN", "project-token"),
        (
            "BRIDGE_PROJECT_BRAND_B_SERVICE_ACCOUNT_SECRET",
            "brand-b-secret",
        ),
    ];
    let example = ConfigFile {
        path: PathBuf::from("docs/bridge.example.toml"),
        text,
    };
    let config = Config::from_sources(Some(&example), &env(&vars), &Flags::default()).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(
        config.archive.map(|archive| archive.url).as_deref(),
        Some("s3://acme-currents-archive/bridge")
    );
}
