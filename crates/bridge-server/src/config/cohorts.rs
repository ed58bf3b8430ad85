//! The validated settings of the cohort import (`[cohorts]` and `[braze]`):
//! Mixpanel cohorts into Braze, by Mixpanel's webhook or by pulling.
//!
//! The import is on in `serve` when the webhook is ([`CohortWebhookConfig`]:
//! credentials set, or explicitly unauthenticated) or a pull schedule is set.
//! It then needs a Braze destination: a REST API key for the attribute
//! writer, or the partner keys for the partner writer; in dry-run mode
//! neither (the Braze requests go to a file).

use std::time::Duration;

use cohort_import::braze::{Instance, RateLimit};
use cohort_import::identity::IdentityRule;
use mixpanel_client::Secret;

/// The cohort import's settings. `Debug` shows no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortsConfig {
    /// Mixpanel's cohort-sync webhook, when it is on.
    pub webhook: Option<CohortWebhookConfig>,
    /// How a Mixpanel member becomes a Braze user (`cohorts.identity`).
    pub identity: IdentityRule,
    /// Which Braze API the changes go to (`cohorts.writer`).
    pub writer: CohortWriter,
    /// The Braze REST connection; `None` when no key is configured (allowed
    /// only when the import is off or in dry-run mode).
    pub braze: Option<BrazeConfig>,
    /// The pull schedule inside `serve`, when one is set.
    pub pull: Option<PullSchedule>,
}

/// The webhook endpoint Mixpanel's cohort sync posts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortWebhookConfig {
    /// The path (`cohorts.webhook_path`, default `/mixpanel/cohorts`).
    pub path: String,
    /// Accepted Basic credentials, each `user:password`
    /// (`cohorts.webhook_credentials`); empty only with
    /// `cohorts.webhook_allow_unauthenticated = true`.
    pub credentials: Vec<Secret>,
    /// The largest request body accepted (`cohorts.max_body_bytes`).
    pub max_body_bytes: usize,
    /// The most members one page may hold (`cohorts.max_members_per_page`).
    pub max_members_per_page: usize,
}

/// Where membership changes go in Braze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CohortWriter {
    /// An array custom attribute through `/users/track` (the default).
    Attribute {
        /// Its name (`cohorts.attribute`, default `mixpanel_cohorts`).
        attribute: String,
    },
    /// Braze's partner cohort API.
    Partner {
        /// `braze.partner_name`, the path segment Braze assigned.
        partner_name: String,
        /// `braze.partner_api_key`.
        partner_api_key: Secret,
        /// `braze.data_import_key`, the customer's Data Import Key.
        data_import_key: Secret,
    },
}

/// The Braze REST connection.
#[derive(Debug, Clone, PartialEq)]
pub struct BrazeConfig {
    /// `braze.rest_api_key` (needs the `users.track` permission); `None`
    /// with the partner writer, which needs no REST key.
    pub rest_api_key: Option<Secret>,
    /// `braze.instance`, such as `US-03` (default `US-01`).
    pub instance: Instance,
    /// `braze.api_url`: a base URL replacing the instance's (proxies, tests).
    pub api_url: Option<String>,
    /// Requests per window the writer keeps to
    /// (`braze.rate_limit_requests`, `braze.rate_limit_window_secs`;
    /// default 3000 per 3 s, Braze's `/users/track` burst limit).
    pub rate_limit: RateLimit,
    /// The timeout of one request attempt (`braze.request_timeout_secs`).
    pub request_timeout: Duration,
}

/// When `serve` pulls cohorts through Mixpanel's Query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSchedule {
    /// `cohorts.pull_cohorts`: the cohort ids; all of the project's when empty.
    pub cohort_ids: Vec<u64>,
    /// `cohorts.pull_interval_secs`: from the end of one pull to the next.
    pub interval: Duration,
}

impl CohortsConfig {
    /// Whether `serve` runs the import: the webhook or a pull schedule is on.
    pub fn is_enabled(&self) -> bool {
        self.webhook.is_some() || self.pull.is_some()
    }

    /// The attribute name, for the attribute writer and dry runs.
    pub fn attribute(&self) -> &str {
        match &self.writer {
            CohortWriter::Attribute { attribute } => attribute,
            CohortWriter::Partner { .. } => cohort_import::writer::DEFAULT_ATTRIBUTE,
        }
    }
}
