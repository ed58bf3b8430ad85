//! The Braze client and its builder: configuration, checked once, and the
//! transport and rate limiter every clone shares.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use mixpanel_client::{RetryParams, Secret};

use super::limiter::{RateLimit, RateLimiter};
use super::transport::{HttpRequest, HttpResponse, Transport};
use super::{BrazeError, Instance};

/// A Braze REST client for one workspace. Cheap to clone; clones share the
/// connection pool, the concurrency limit, the rate limiter (and Braze's
/// pauses) and the retry budget. `Debug` never shows the key.
#[derive(Clone)]
pub struct BrazeClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) base_url: String,
    /// The REST API key, for redacting it from messages (empty for a
    /// partner-only client).
    pub(super) api_key: Secret,
    /// `Bearer <key>`, marked sensitive; `None` for a partner-only client.
    pub(super) authorization: Option<HeaderValue>,
    pub(super) transport: Transport,
}

impl std::fmt::Debug for BrazeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrazeClient")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.api_key)
            .finish_non_exhaustive()
    }
}

/// Builds a [`BrazeClient`]. Defaults: instance US-01, 96 concurrent
/// requests, 30 s per attempt, [`RetryParams::default`] with 5 retries,
/// [`RateLimit::default`] (3000 requests per 3 s).
#[derive(Debug, Clone)]
pub struct BrazeClientBuilder {
    api_key: Option<Secret>,
    instance: Instance,
    base_url: Option<String>,
    retry: RetryParams,
    request_timeout: Duration,
    max_concurrent_requests: usize,
    rate_limit: RateLimit,
    user_agent: String,
    extra_roots_pem: Vec<u8>,
}

impl BrazeClient {
    /// Starts building a client with this REST API key (it needs the
    /// `users.track` permission for [`BrazeClient::track_attributes`]).
    pub fn builder(api_key: Secret) -> BrazeClientBuilder {
        BrazeClientBuilder {
            api_key: Some(api_key),
            instance: Instance::default(),
            base_url: None,
            retry: RetryParams {
                max_retries: 5,
                ..RetryParams::default()
            },
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 96,
            rate_limit: RateLimit::default(),
            user_agent: concat!("braze-mixpanel-bridge/", env!("CARGO_PKG_VERSION")).to_owned(),
            extra_roots_pem: Vec::new(),
        }
    }

    /// Starts building a client for the partner cohort API only, which
    /// needs no REST API key (its keys travel in each request);
    /// [`BrazeClient::track_attributes`] then fails with
    /// [`BrazeError::Config`].
    pub fn partner_only() -> BrazeClientBuilder {
        BrazeClientBuilder {
            api_key: None,
            ..BrazeClient::builder(Secret::new(""))
        }
    }

    /// The REST endpoint requests go to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }
}

impl BrazeClient {
    /// Sends `request` and returns a successful response; an error, or a
    /// status other than 2xx, becomes a [`BrazeError`] with `secrets`
    /// redacted from whatever Braze echoed.
    pub(crate) async fn send_checked(
        &self,
        request: HttpRequest,
        secrets: &[&str],
    ) -> Result<HttpResponse, BrazeError> {
        let response = self
            .inner
            .transport
            .send(request)
            .await
            .map_err(|error| error.redact(secrets))?;
        if !response.status.is_success() {
            return Err(response.into_error(secrets));
        }
        Ok(response)
    }
}

impl BrazeClientBuilder {
    /// The workspace's instance (default US-01).
    pub fn instance(mut self, instance: Instance) -> BrazeClientBuilder {
        self.instance = instance;
        self
    }

    /// Sends every request to this base URL instead of the instance's
    /// endpoint (a proxy, or a test server); a trailing `/` is trimmed.
    pub fn base_url(mut self, base_url: &str) -> BrazeClientBuilder {
        self.base_url = Some(base_url.trim().trim_end_matches('/').to_owned());
        self
    }

    /// The retry policy (default [`RetryParams::default`] with 5 retries).
    pub fn retry(mut self, retry: RetryParams) -> BrazeClientBuilder {
        self.retry = retry;
        self
    }

    /// Time allowed for one attempt, response body included, counted from
    /// when the rate limiter lets it go (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> BrazeClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// Requests in flight at once, across all clones (default 96; 0 means 1).
    pub fn max_concurrent_requests(mut self, max: usize) -> BrazeClientBuilder {
        self.max_concurrent_requests = max.max(1);
        self
    }

    /// The most requests started within any rolling window, retries
    /// included, across all clones (default 3000 per 3 s, Braze's
    /// `/users/track` limit). Lower it when other tools share the workspace.
    pub fn rate_limit(mut self, rate_limit: RateLimit) -> BrazeClientBuilder {
        self.rate_limit = rate_limit;
        self
    }

    /// The `User-Agent` header (default `braze-mixpanel-bridge/<version>`).
    pub fn user_agent(mut self, user_agent: &str) -> BrazeClientBuilder {
        self.user_agent = user_agent.to_owned();
        self
    }

    /// Trusts these PEM certificates (a bundle) as roots too, besides the
    /// platform's store and the bundled public roots (a TLS-inspecting
    /// proxy, a private Braze proxy).
    pub fn extra_root_certificates(mut self, pem: &[u8]) -> BrazeClientBuilder {
        self.extra_roots_pem.extend_from_slice(pem);
        self.extra_roots_pem.push(b'\n');
        self
    }

    /// Checks the configuration and builds the client.
    pub fn build(self) -> Result<BrazeClient, BrazeError> {
        let authorization = match &self.api_key {
            Some(key) => Some(bearer(key)?),
            None => None,
        };
        let base_url = self
            .base_url
            .unwrap_or_else(|| self.instance.rest_url().to_owned());
        match reqwest::Url::parse(&base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => {
                return Err(BrazeError::Config(format!(
                    "base URL {base_url:?} is not an http(s) URL"
                )));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(BrazeError::Config("the request timeout is zero".to_owned()));
        }
        if self.rate_limit.max_requests == 0 {
            return Err(BrazeError::Config(
                "the rate limit allows no request (max_requests is 0)".to_owned(),
            ));
        }
        let ratio = self.retry.retry_ratio;
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(BrazeError::Config(format!(
                "retry_ratio {ratio} is outside 0 to 1000"
            )));
        }
        let mut http_client = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .connect_timeout(Duration::from_secs(10))
            // HTTP/1.1 whatever features reqwest was built with (another
            // crate in a binary may turn on its `http2`), as tested.
            .http1_only()
            .pool_max_idle_per_host(self.max_concurrent_requests);
        if !self.extra_roots_pem.is_empty() {
            let roots =
                reqwest::Certificate::from_pem_bundle(&self.extra_roots_pem).map_err(|error| {
                    BrazeError::Config(format!(
                        "the extra root certificates are not PEM certificates: {error}"
                    ))
                })?;
            for root in roots {
                http_client = http_client.add_root_certificate(root);
            }
        }
        let http_client = http_client.build().map_err(|error| {
            BrazeError::Config(format!("cannot build the HTTP client: {error}"))
        })?;
        let limiter = Arc::new(RateLimiter::new(self.rate_limit));
        let transport = Transport::new(
            http_client,
            self.retry,
            self.request_timeout,
            self.max_concurrent_requests,
            limiter,
        );
        Ok(BrazeClient {
            inner: Arc::new(Inner {
                base_url,
                api_key: self.api_key.unwrap_or_else(|| Secret::new("")),
                authorization,
                transport,
            }),
        })
    }
}

/// `Bearer <key>`, marked sensitive so that no layer logs it.
fn bearer(key: &Secret) -> Result<HeaderValue, BrazeError> {
    let key = key.expose();
    if key.trim().is_empty() {
        return Err(BrazeError::Config("the REST API key is empty".to_owned()));
    }
    let mut authorization = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
        BrazeError::Config("the REST API key holds characters not allowed in a header".to_owned())
    })?;
    authorization.set_sensitive(true);
    Ok(authorization)
}
