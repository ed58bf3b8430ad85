//! NATS JetStream, the shared log that lets several `serve` replicas act as
//! one bridge: the settings every NATS-backed part reads (the spool in
//! `spool::nats`, the cohort state, `check-config --connect`, the `dlq`
//! command), validated by `config` from `[nats]` and `BRIDGE_NATS_*`.

use std::path::PathBuf;
use std::time::Duration;

use mixpanel_client::Secret;

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

#[cfg(test)]
mod tests {
    use super::*;

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
