//! NATS JetStream, the shared log that lets several `serve` replicas act as
//! one bridge: the settings every NATS-backed part reads (the spool in
//! `spool::nats`, the cohort state, `check-config --connect`, the `dlq`
//! command), validated by `config` from `[nats]` and `BRIDGE_NATS_*`, and
//! [`connect`], the one way a part of the bridge connects to NATS.
//!
//! Secrets (passwords, tokens, NKey seeds, user info in a server URL) never
//! appear in an error or a log line: errors name the servers with their
//! user info replaced by `[redacted]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mixpanel_client::Secret;

#[cfg(test)]
pub(crate) mod test_server;

/// How to reach NATS and which JetStream objects the bridge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); the client
    /// connects to any of them and follows the cluster's others.
    pub servers: Vec<String>,
    /// How the client authenticates.
    pub auth: NatsAuth,
    /// A PEM file of CA certificates to trust for `tls://` servers, beside
    /// the platform's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
    /// The stream of accepted batches (work-queue retention, new messages
    /// refused when full: nothing acknowledged is ever dropped).
    pub stream: String,
    /// The subject prefix of that stream: a batch is published to
    /// `<prefix>.<route>`, its route being the workspace (or `_`).
    pub subject_prefix: String,
    /// The durable pull consumer every replica's delivery shares.
    pub consumer: String,
    /// The stream of dead letters (kept until replayed or purged).
    pub dead_letter_stream: String,
    /// The prefix of the cohort state's key-value buckets.
    pub kv_bucket_prefix: String,
    /// Copies of each stream and bucket: 1, or 3 on a cluster of 3 or more.
    pub replicas: usize,
    /// The batch stream's size limit in bytes; publishing beyond it is
    /// refused (503 to Braze), never made room for by dropping old batches.
    pub max_bytes: u64,
    /// How long the stream remembers a batch's `Nats-Msg-Id`, so that
    /// Braze's retries of one batch within it are stored once.
    pub duplicate_window: Duration,
    /// How long one publish waits for its PubAck before ingest answers 503.
    pub publish_timeout: Duration,
    /// How long connecting (or a JetStream API call) may take.
    pub connect_timeout: Duration,
}

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (a server without authorization, on loopback).
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// An NKey seed (`SU…`).
    NKey(Secret),
    /// A `.creds` file (JWT and NKey seed), read at connection.
    CredsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => {
                write!(f, "UserPassword {{ user: {user:?}, password: [redacted] }}")
            }
            NatsAuth::Token(_) => f.write_str("Token([redacted])"),
            NatsAuth::NKey(_) => f.write_str("NKey([redacted])"),
            NatsAuth::CredsFile(path) => write!(f, "CredsFile({path:?})"),
        }
    }
}

impl NatsOptions {
    /// The defaults for these servers: no credentials, one replica, streams
    /// `bridge-batches` (`bridge.batches.*`, 10 GiB) and
    /// `bridge-dead-letters`, consumer `bridge-delivery`, buckets
    /// `bridge-cohorts-*`, a 2-minute duplicate window, 5 s publish and
    /// connect timeouts.
    pub fn new(servers: Vec<String>) -> NatsOptions {
        NatsOptions {
            servers,
            auth: NatsAuth::None,
            tls_ca_file: None,
            tls_required: false,
            stream: "bridge-batches".to_owned(),
            subject_prefix: "bridge.batches".to_owned(),
            consumer: "bridge-delivery".to_owned(),
            dead_letter_stream: "bridge-dead-letters".to_owned(),
            kv_bucket_prefix: "bridge-cohorts".to_owned(),
            replicas: 1,
            max_bytes: 10 << 30,
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why connecting to NATS, or setting up its JetStream objects, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The options cannot work (no server, a subject prefix that is not a
    /// subject, overlapping streams).
    #[error("invalid NATS settings: {0}")]
    Invalid(String),
    /// No server could be reached, or it refused the credentials.
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect {
        /// The servers tried, user info redacted.
        servers: String,
        /// What went wrong.
        reason: String,
    },
    /// A stream or consumer exists with settings other than the
    /// configuration's; the bridge changes none of them on its own (with
    /// several replicas, two configurations would fight over them).
    #[error(
        "{object} has {setting} {found}, the configuration asks for {wanted}; change the configuration, or the {object_kind} with `nats {object_kind} edit`"
    )]
    Mismatch {
        /// `stream bridge-batches`, `consumer bridge-delivery of stream bridge-batches`.
        object: String,
        /// `stream` or `consumer`.
        object_kind: &'static str,
        /// The setting, in NATS's words (`replicas`, `max_bytes`, `ack_wait`, …).
        setting: &'static str,
        /// Its value on the server.
        found: String,
        /// The value the configuration asks for.
        wanted: String,
    },
    /// A JetStream API request failed.
    #[error("NATS JetStream {what} failed: {reason}")]
    JetStream {
        /// What was asked (`stream info of bridge-batches`, …).
        what: String,
        /// Why it failed.
        reason: String,
    },
}

/// The client name every bridge connection announces to the server (seen in
/// `nats server report connections`).
pub fn client_name() -> String {
    format!(
        "braze-mixpanel-bridge/{} pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

/// Connects to NATS as `options` say: any of `options.servers` (the client
/// then follows the cluster's other servers and reconnects without end
/// after a disconnection, keeping its subscriptions), with the configured
/// credentials, TLS trust (`tls_ca_file` beside the platform's roots) and
/// `tls_required`, within `connect_timeout` per server, announcing
/// [`client_name`]. Connection losses and recoveries are logged once each.
///
/// Fails when no server can be reached at first, or the credentials are
/// refused; the error names the servers (user info redacted), never a
/// secret.
pub async fn connect(options: &NatsOptions) -> Result<async_nats::Client, NatsError> {
    let servers = redacted_servers(&options.servers);
    let connect_error = |reason: String| NatsError::Connect {
        servers: servers.clone(),
        reason,
    };
    if options.servers.is_empty() {
        return Err(NatsError::Invalid(
            "no NATS server is configured".to_owned(),
        ));
    }
    let addresses = options
        .servers
        .iter()
        .map(|server| {
            server.parse::<async_nats::ServerAddr>().map_err(|error| {
                NatsError::Invalid(format!(
                    "{} is not a NATS server URL: {error}",
                    redact_url(server)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut connect = match &options.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose().to_owned(),
            )
        }
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.expose().to_owned()),
        NatsAuth::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed.expose().to_owned()),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|error| {
                // The reader's message names the file, not its contents.
                connect_error(format!(
                    "cannot read the credentials file {}: {}",
                    path.display(),
                    error.kind()
                ))
            })?,
    };
    if let Some(ca_file) = &options.tls_ca_file {
        connect = connect.tls_client_config(tls_client_config(ca_file)?);
    }
    connect = connect
        .name(client_name())
        .require_tls(options.tls_required)
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.connect_timeout))
        .event_callback(|event| async move { log_event(&event) });
    connect
        .connect(addresses.as_slice())
        .await
        .map_err(|error| connect_error(error_chain(&error)))
}

/// A rustls client configuration trusting the platform's roots and the
/// certificates of `ca_file`.
fn tls_client_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, NatsError> {
    use rustls_pki_types::pem::PemObject as _;

    let invalid = |message: String| {
        NatsError::Invalid(format!("NATS TLS CA file {}: {message}", ca_file.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    // The platform's roots are optional: a container may have none, and the
    // CA file is then the only trust.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let certificates = rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|error| invalid(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("holds no PEM certificate".to_owned()));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| invalid(error.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| invalid(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// Logs what happens to the connection: a loss and a recovery once each
/// (the client retries in between without a line per attempt).
fn log_event(event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => tracing::info!("Connected to NATS."),
        async_nats::Event::Disconnected => {
            tracing::warn!("Lost the connection to NATS; reconnecting.");
        }
        async_nats::Event::LameDuckMode => {
            tracing::info!("The NATS server is shutting down (lame duck mode); moving to another.");
        }
        async_nats::Event::SlowConsumer(sid) => {
            tracing::warn!(subscription = sid, "NATS reports a slow consumer.");
        }
        async_nats::Event::ServerError(error) => {
            tracing::warn!(error = %error, "NATS server error.");
        }
        async_nats::Event::ClientError(error) => {
            tracing::warn!(error = %error, "NATS client error.");
        }
        async_nats::Event::Draining | async_nats::Event::Closed => {
            tracing::debug!(event = %event, "NATS connection event.");
        }
    }
}

/// An error with its sources, `a: b: c`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `servers` for an error message, comma-separated, user info redacted.
pub(crate) fn redacted_servers(servers: &[String]) -> String {
    servers
        .iter()
        .map(|server| redact_url(server))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `url` with its user info (`user:password@`, `token@`) replaced by
/// `[redacted]@`.
fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |idx| idx + 3);
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |idx| authority_start + idx);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}[redacted]{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_redacted_from_server_urls() {
        assert_eq!(
            redact_url("nats://bridge:pa55@nats-1:4222"),
            "nats://[redacted]@nats-1:4222"
        );
        assert_eq!(redact_url("tls://t0ken@nats-1"), "tls://[redacted]@nats-1");
        assert_eq!(redact_url("nats-1:4222"), "nats-1:4222");
        assert_eq!(
            redact_url("nats://nats-1:4222/p@th"),
            "nats://nats-1:4222/p@th"
        );
        assert_eq!(
            redacted_servers(&["a:pw@h1".to_owned(), "nats://h2".to_owned()]),
            "[redacted]@h1, nats://h2"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_within_the_connect_timeout_without_secrets() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut options =
            NatsOptions::new(vec![format!("nats://bridge:pa55-word@127.0.0.1:{port}")]);
        options.auth = NatsAuth::Token(Secret::new("pa55-word"));
        options.connect_timeout = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let error = connect(&options).await.unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!error.contains("pa55-word"), "{error}");
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    }

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("bridge-nats-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn an_nkey_seed_authenticates() {
        let user = nkeys::KeyPair::new_user();
        let config = format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        );
        let Some(server) = test_server::NatsServer::start_with_config(&config) else {
            return;
        };
        let mut options = NatsOptions::new(vec![server.url()]);
        options.auth = NatsAuth::NKey(Secret::new(user.seed().unwrap()));
        let client = connect(&options).await.unwrap();
        client.flush().await.unwrap();
        let stranger = nkeys::KeyPair::new_user();
        options.auth = NatsAuth::NKey(Secret::new(stranger.seed().unwrap()));
        let error = connect(&options).await.unwrap_err().to_string();
        assert!(!error.contains(&stranger.seed().unwrap()), "{error}");
    }

    #[tokio::test]
    async fn tls_trusts_the_ca_file_and_tls_required_refuses_plain_servers() {
        let dir = TempDir::new("tls");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        std::fs::write(&cert_file, certificate.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let config = format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
            cert_file.display(),
            key_file.display()
        );
        let Some(server) = test_server::NatsServer::start_with_config(&config) else {
            return;
        };
        let mut options = NatsOptions::new(vec![format!("tls://127.0.0.1:{}", server.port())]);
        options.connect_timeout = Duration::from_secs(2);
        // The platform's roots do not know our certificate.
        assert!(connect(&options).await.is_err());
        options.tls_ca_file = Some(cert_file);
        options.tls_required = true;
        let client = connect(&options).await.unwrap();
        client.flush().await.unwrap();

        let Some(plain) = test_server::NatsServer::start() else {
            return;
        };
        let mut options = NatsOptions::new(vec![plain.url()]);
        options.connect_timeout = Duration::from_secs(2);
        connect(&options).await.unwrap();
        options.tls_required = true;
        assert!(
            connect(&options).await.is_err(),
            "a plain server with tls_required"
        );
    }

    #[test]
    fn an_empty_or_unreadable_ca_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("bridge-nats-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = tls_client_config(&empty).unwrap_err().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let missing = dir.join("missing.pem");
        assert!(tls_client_config(&missing).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_never_print() {
        for auth in [
            NatsAuth::UserPassword {
                user: "bridge".to_owned(),
                password: Secret::new("pa55-word"),
            },
            NatsAuth::Token(Secret::new("pa55-word")),
            NatsAuth::NKey(Secret::new("pa55-word")),
        ] {
            let mut options = NatsOptions::new(vec!["nats://127.0.0.1:4222".to_owned()]);
            options.auth = auth;
            let printed = format!("{options:?}");
            assert!(!printed.contains("pa55-word"), "{printed}");
        }
    }
}
