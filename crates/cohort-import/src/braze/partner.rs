//! Braze's partner cohort API, for holders of a Braze partner key: create
//! or rename a cohort, then add and remove its users by `external_id`.
//!
//! The partner key and the client secret travel in the JSON body, so these
//! calls send no `Authorization` header, and both secrets are cut out of
//! every message Braze sends back before it lands in an error. Any 2xx is
//! success; 423 (the cohort is locked while Braze processes it), 429 and 5xx
//! are retried. Both calls are idempotent (an upsert, and adding or removing
//! the same ids again), so timeouts are retried too.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use mixpanel_client::Secret;
use serde::Serialize;

use super::transport::HttpRequest;
use super::{BrazeClient, BrazeError};

/// The most user ids (adds and removes together) in one
/// [`BrazeClient::partner_cohort_changes`] call.
pub const MAX_PARTNER_IDS: usize = 1000;

/// What Braze gave a partner: its name in the API path, its key and the
/// workspace's client secret. `Debug` shows neither secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerCredentials {
    /// The partner's name as Braze registered it (`[A-Za-z0-9_-]+`).
    pub partner_name: String,
    /// The partner API key.
    pub partner_api_key: Secret,
    /// The client secret of the workspace's partner integration.
    pub client_secret: Secret,
}

/// A cohort as the partner API creates or renames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerCohort {
    /// The partner's id for the cohort.
    pub cohort_id: String,
    /// The name shown in Braze.
    pub name: String,
    /// When the cohort was created, ISO 8601.
    pub created_at: String,
}

impl BrazeClient {
    /// Creates the cohort, or renames it if it exists:
    /// `POST /partners/{partner_name}/cohorts`.
    pub async fn partner_upsert_cohort(
        &self,
        partner: &PartnerCredentials,
        cohort: &PartnerCohort,
    ) -> Result<(), BrazeError> {
        #[derive(Serialize)]
        struct Body<'a> {
            partner_api_key: &'a str,
            client_secret: &'a str,
            cohort_id: &'a str,
            name: &'a str,
            created_at: &'a str,
        }
        check_cohort_id(&cohort.cohort_id)?;
        let body = Body {
            partner_api_key: partner.partner_api_key.expose(),
            client_secret: partner.client_secret.expose(),
            cohort_id: &cohort.cohort_id,
            name: &cohort.name,
            created_at: &cohort.created_at,
        };
        let attempts = self
            .partner_post(partner, "partner_cohort", "cohorts", &body)
            .await?;
        tracing::debug!(
            cohort_id = %cohort.cohort_id,
            attempts,
            "Upserted the cohort in Braze."
        );
        Ok(())
    }

    /// Adds `adds` to the cohort and removes `removes` from it, by
    /// `external_id`: `POST /partners/{partner_name}/cohorts/users`. At most
    /// [`MAX_PARTNER_IDS`] ids together, else [`BrazeError::Config`] and
    /// nothing is sent; nothing is sent when both are empty.
    pub async fn partner_cohort_changes(
        &self,
        partner: &PartnerCredentials,
        cohort_id: &str,
        adds: &[String],
        removes: &[String],
    ) -> Result<(), BrazeError> {
        #[derive(Serialize)]
        struct Body<'a> {
            partner_api_key: &'a str,
            client_secret: &'a str,
            cohort_id: &'a str,
            cohort_changes: Vec<Change<'a>>,
        }
        #[derive(Serialize)]
        struct Change<'a> {
            user_ids: &'a [String],
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            should_remove: bool,
        }
        check_cohort_id(cohort_id)?;
        let n_ids = adds.len() + removes.len();
        if n_ids > MAX_PARTNER_IDS {
            return Err(BrazeError::Config(format!(
                "{n_ids} user ids in one cohort change, Braze takes at most {MAX_PARTNER_IDS}"
            )));
        }
        if n_ids == 0 {
            return Ok(());
        }
        let mut cohort_changes = Vec::with_capacity(2);
        if !adds.is_empty() {
            cohort_changes.push(Change {
                user_ids: adds,
                should_remove: false,
            });
        }
        if !removes.is_empty() {
            cohort_changes.push(Change {
                user_ids: removes,
                should_remove: true,
            });
        }
        let body = Body {
            partner_api_key: partner.partner_api_key.expose(),
            client_secret: partner.client_secret.expose(),
            cohort_id,
            cohort_changes,
        };
        let attempts = self
            .partner_post(partner, "partner_cohort_users", "cohorts/users", &body)
            .await?;
        tracing::debug!(
            cohort_id,
            adds = adds.len(),
            removes = removes.len(),
            attempts,
            "Sent cohort changes to Braze."
        );
        Ok(())
    }

    /// POSTs `body` to `/partners/{partner_name}/{path}`; returns the
    /// attempts it took. Errors carry no secret.
    async fn partner_post(
        &self,
        partner: &PartnerCredentials,
        endpoint: &'static str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<u32, BrazeError> {
        let name = &partner.partner_name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        {
            return Err(BrazeError::Config(format!(
                "partner name {name:?} may hold only letters, digits, '_' and '-'"
            )));
        }
        let secrets = [
            partner.partner_api_key.expose(),
            partner.client_secret.expose(),
            self.inner.api_key.expose(),
        ];
        let body = serde_json::to_vec(body).map(Bytes::from).map_err(|error| {
            BrazeError::Config(format!("cannot serialize the request: {error}")).redact(&secrets)
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let request = HttpRequest {
            endpoint,
            url: format!("{}/partners/{name}/{path}", self.inner.base_url),
            headers,
            body,
        };
        let response = self.send_checked(request, &secrets).await?;
        Ok(response.attempts)
    }
}

/// A cohort id must not be empty: Braze could not tell cohorts apart.
fn check_cohort_id(cohort_id: &str) -> Result<(), BrazeError> {
    if cohort_id.is_empty() {
        return Err(BrazeError::Config("the cohort id is empty".to_owned()));
    }
    Ok(())
}
