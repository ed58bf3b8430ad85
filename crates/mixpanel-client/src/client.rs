//! The client and its builder: configuration, shared transport, endpoints.

use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::config::{Credentials, Region, Secret};
use crate::limiter::{QueryLimiter, QueryLimits};
use crate::retry::RetryParams;
use crate::transport::Transport;

/// A Mixpanel client for one project. Cheap to clone; clones share the
/// connection pool, the concurrency limit, the retry budget and the Query
/// API budget.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) credentials: Credentials,
    pub(crate) ingestion_url: String,
    pub(crate) query_url: String,
    pub(crate) project_token: Option<Secret>,
    pub(crate) gzip: bool,
    pub(crate) transport: Transport,
    pub(crate) query_limiter: QueryLimiter,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("credentials", &self.inner.credentials)
            .field("ingestion_url", &self.inner.ingestion_url)
            .field("query_url", &self.inner.query_url)
            .field("gzip", &self.inner.gzip)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]. Defaults: US region, gzip on, 10 concurrent
/// requests, 60 s per attempt, [`RetryParams::default`],
/// [`QueryLimits::default`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    credentials: Credentials,
    region: Region,
    base_url: Option<String>,
    project_token: Option<Secret>,
    gzip: bool,
    max_concurrent_requests: usize,
    request_timeout: Duration,
    retry: RetryParams,
    query_limits: QueryLimits,
    extra_roots_pem: Vec<u8>,
}

impl Client {
    /// Starts building a client with these credentials.
    pub fn builder(credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            credentials,
            region: Region::Us,
            base_url: None,
            project_token: None,
            gzip: true,
            max_concurrent_requests: 10,
            request_timeout: Duration::from_secs(60),
            retry: RetryParams::default(),
            query_limits: QueryLimits::default(),
            extra_roots_pem: Vec::new(),
        }
    }

    /// The project id the credentials carry, if any.
    pub fn project_id(&self) -> Option<&str> {
        self.inner.credentials.project_id()
    }

    /// `/import` with `strict=1`, plus `project_id` whenever the
    /// credentials carry one (a service account, or an API secret given a
    /// project id): Mixpanel's spec marks it required. A project token, or
    /// an API secret alone, has none to send; Mixpanel then authenticates
    /// the request by the token or secret alone.
    pub(crate) fn import_url(&self) -> String {
        let mut url = format!("{}/import?strict=1", self.inner.ingestion_url);
        if let Some(project_id) = self.inner.credentials.project_id() {
            url.push_str("&project_id=");
            url.push_str(project_id);
        }
        url
    }
}

impl ClientBuilder {
    /// The project's data residency region (default US).
    pub fn region(mut self, region: Region) -> ClientBuilder {
        self.region = region;
        self
    }

    /// Sends every request to this base URL instead of Mixpanel's hosts (a
    /// proxy, or a test server): ingestion at `<base>/import`, `<base>/engage`,
    /// queries at `<base>/api/query/…`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> ClientBuilder {
        self.base_url = Some(base_url.into().trim_end_matches('/').to_owned());
        self
    }

    /// The project token, needed for `/engage` profile updates.
    pub fn project_token(mut self, token: impl Into<Secret>) -> ClientBuilder {
        self.project_token = Some(token.into());
        self
    }

    /// Whether `/import` bodies are gzip-compressed (default on).
    pub fn gzip(mut self, gzip: bool) -> ClientBuilder {
        self.gzip = gzip;
        self
    }

    /// Requests in flight at once, across all clones (default 10; Mixpanel
    /// suggests 10–20 for `/import`).
    pub fn max_concurrent_requests(mut self, max: usize) -> ClientBuilder {
        self.max_concurrent_requests = max.max(1);
        self
    }

    /// Time allowed for one attempt, response body included (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryParams) -> ClientBuilder {
        self.retry = retry;
        self
    }

    /// The Query API budget (cohorts) the client keeps to, across all
    /// clones (default: Mixpanel's 5 concurrent and 60 per hour). Lower it
    /// when other tools query the same project.
    pub fn query_limits(mut self, limits: QueryLimits) -> ClientBuilder {
        self.query_limits = limits;
        self
    }

    /// Trusts these PEM certificates (a bundle) as roots too, besides the
    /// platform's store and the bundled public roots: for a company's
    /// TLS-inspecting proxy, or a private Mixpanel proxy.
    pub fn extra_root_certificates(mut self, pem: &[u8]) -> ClientBuilder {
        self.extra_roots_pem.extend_from_slice(pem);
        self.extra_roots_pem.push(b'\n');
        self
    }

    /// Checks the configuration and builds the client.
    pub fn build(self) -> Result<Client, Error> {
        if let Some(project_id) = self.credentials.project_id()
            && (project_id.is_empty() || !project_id.bytes().all(|byte| byte.is_ascii_digit()))
        {
            return Err(Error::Config(format!(
                "project id {project_id:?} must be the numeric id from the project settings"
            )));
        }
        if let Credentials::ApiSecret { .. } = self.credentials {
            tracing::warn!(
                "Authenticating with the project API secret, which Mixpanel retires on 2027-03-03; use a service account."
            );
        }
        let (ingestion_url, query_url) = match &self.base_url {
            Some(base) => (base.clone(), format!("{base}/api/query")),
            None => (
                self.region.ingestion_url().to_owned(),
                self.region.query_url().to_owned(),
            ),
        };
        let mut http_client = reqwest::Client::builder()
            .user_agent(concat!("mixpanel-client-rs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // HTTP/1.1 whatever features reqwest was built with (another
            // crate in a binary may turn on its `http2`): one connection per
            // request in flight is what the concurrency limit counts on.
            .http1_only()
            .pool_max_idle_per_host(self.max_concurrent_requests);
        if !self.extra_roots_pem.is_empty() {
            let roots =
                reqwest::Certificate::from_pem_bundle(&self.extra_roots_pem).map_err(|error| {
                    Error::Config(format!(
                        "the extra root certificates are not PEM certificates: {error}"
                    ))
                })?;
            for root in roots {
                http_client = http_client.add_root_certificate(root);
            }
        }
        let http_client = http_client
            .build()
            .map_err(|error| Error::Config(format!("cannot build the HTTP client: {error}")))?;
        let transport = Transport::new(
            http_client,
            self.retry,
            self.request_timeout,
            self.max_concurrent_requests,
        );
        Ok(Client {
            inner: Arc::new(Inner {
                credentials: self.credentials,
                ingestion_url,
                query_url,
                project_token: self.project_token,
                gzip: self.gzip,
                transport,
                query_limiter: QueryLimiter::new(self.query_limits),
            }),
        })
    }
}
