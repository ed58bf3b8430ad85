//! Where and as whom the client talks to Mixpanel: regions, credentials,
//! and the `Secret` wrapper that keeps secrets out of logs.

use std::fmt;

/// A Mixpanel data residency region. It decides the API hosts; a project
/// must be reached in its own region (new EU projects drop data sent to the
/// US hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Region {
    /// United States (`api.mixpanel.com`, `mixpanel.com/api`).
    #[default]
    Us,
    /// European Union (`api-eu.mixpanel.com`, `eu.mixpanel.com/api`).
    Eu,
    /// India (`api-in.mixpanel.com`, `in.mixpanel.com/api`).
    In,
}

impl Region {
    /// Base URL of the ingestion API (`/import`, `/engage`).
    pub const fn ingestion_url(self) -> &'static str {
        match self {
            Region::Us => "https://api.mixpanel.com",
            Region::Eu => "https://api-eu.mixpanel.com",
            Region::In => "https://api-in.mixpanel.com",
        }
    }

    /// Base URL of the query API (`/cohorts/list`, `/engage` queries).
    pub const fn query_url(self) -> &'static str {
        match self {
            Region::Us => "https://mixpanel.com/api/query",
            Region::Eu => "https://eu.mixpanel.com/api/query",
            Region::In => "https://in.mixpanel.com/api/query",
        }
    }
}

impl std::str::FromStr for Region {
    type Err = UnknownRegion;

    /// Parses `us`, `eu` or `in`, ignoring ASCII case.
    fn from_str(text: &str) -> Result<Region, UnknownRegion> {
        match text.trim().to_ascii_lowercase().as_str() {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            "in" => Ok(Region::In),
            _ => Err(UnknownRegion(text.to_owned())),
        }
    }
}

/// A region name that is not `us`, `eu` or `in`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Mixpanel region {0:?}: expected us, eu or in")]
pub struct UnknownRegion(String);

/// A secret value. `Debug` and `Display` print `[redacted]`; the value is
/// reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for building a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// A service account (Basic `username:secret`, plus `project_id` on
    /// every request). `/import` needs the Owner or Admin role.
    ServiceAccount {
        /// The service account's username.
        username: String,
        /// Its secret.
        secret: Secret,
        /// The Mixpanel project id.
        project_id: String,
    },
    /// The project token (Basic `token:`). `/import` accepts it; the query
    /// API does not.
    ProjectToken {
        /// The project token.
        token: Secret,
    },
    /// The project's API secret (Basic `secret:`). Deprecated by Mixpanel
    /// and retired on 2027-03-03: the client logs a warning when built with it.
    ApiSecret {
        /// The project API secret.
        secret: Secret,
        /// The project id, needed only for the query API.
        project_id: Option<String>,
    },
}

impl Credentials {
    /// Service account credentials.
    pub fn service_account(
        username: impl Into<String>,
        secret: impl Into<Secret>,
        project_id: impl Into<String>,
    ) -> Credentials {
        Credentials::ServiceAccount {
            username: username.into(),
            secret: secret.into(),
            project_id: project_id.into(),
        }
    }

    /// Legacy project API secret credentials.
    pub fn api_secret(secret: impl Into<Secret>) -> Credentials {
        Credentials::ApiSecret {
            secret: secret.into(),
            project_id: None,
        }
    }

    /// Legacy project API secret credentials with the project id the query
    /// API needs.
    pub fn api_secret_with_project(
        secret: impl Into<Secret>,
        project_id: impl Into<String>,
    ) -> Credentials {
        Credentials::ApiSecret {
            secret: secret.into(),
            project_id: Some(project_id.into()),
        }
    }

    /// Project token credentials (for `/import` only).
    pub fn project_token(token: impl Into<Secret>) -> Credentials {
        Credentials::ProjectToken {
            token: token.into(),
        }
    }

    /// The credentials a user's settings make, by Mixpanel's preference:
    /// a service account (username, secret and project id), else the
    /// legacy API secret (with the project id when given), else the
    /// project token. `Ok(None)` when none is set; an error when a service
    /// account is given in part. Every program that reads credentials from
    /// flags, variables or files should decide through this one rule.
    pub fn from_parts(
        parts: CredentialParts,
    ) -> Result<Option<Credentials>, IncompleteCredentials> {
        use CredentialPart::{ProjectId, ServiceAccountSecret, ServiceAccountUsername};
        let incomplete = |present, missing| Err(IncompleteCredentials { present, missing });
        match (parts.service_account_username, parts.service_account_secret) {
            (Some(username), Some(secret)) => match parts.project_id {
                Some(project_id) => Ok(Some(Credentials::service_account(
                    username, secret, project_id,
                ))),
                None => incomplete(ServiceAccountUsername, ProjectId),
            },
            (Some(_), None) => incomplete(ServiceAccountUsername, ServiceAccountSecret),
            (None, Some(_)) => incomplete(ServiceAccountSecret, ServiceAccountUsername),
            (None, None) => Ok(match (parts.api_secret, parts.project_token) {
                (Some(secret), _) => Some(Credentials::ApiSecret {
                    secret,
                    project_id: parts.project_id,
                }),
                (None, Some(token)) => Some(Credentials::project_token(token)),
                (None, None) => None,
            }),
        }
    }

    /// The project id, when the credentials carry one.
    pub fn project_id(&self) -> Option<&str> {
        match self {
            Credentials::ServiceAccount { project_id, .. } => Some(project_id),
            Credentials::ApiSecret { project_id, .. } => project_id.as_deref(),
            Credentials::ProjectToken { .. } => None,
        }
    }

    /// The `Authorization` header value.
    #[cfg(feature = "network")]
    pub(crate) fn authorization(&self) -> http::HeaderValue {
        let (user, password) = match self {
            Credentials::ServiceAccount {
                username, secret, ..
            } => (username.as_str(), secret.expose()),
            Credentials::ApiSecret { secret, .. } => (secret.expose(), ""),
            Credentials::ProjectToken { token } => (token.expose(), ""),
        };
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = http::HeaderValue::try_from(format!("Basic {encoded}"))
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        value
    }
}

/// Credentials as a user gives them, each part possibly missing, for
/// [`Credentials::from_parts`].
#[derive(Debug, Clone, Default)]
pub struct CredentialParts {
    /// A service account's username.
    pub service_account_username: Option<String>,
    /// A service account's secret.
    pub service_account_secret: Option<Secret>,
    /// The project id.
    pub project_id: Option<String>,
    /// The legacy project API secret.
    pub api_secret: Option<Secret>,
    /// The project token.
    pub project_token: Option<Secret>,
}

/// One part of [`CredentialParts`], to name what is set or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPart {
    /// [`CredentialParts::service_account_username`].
    ServiceAccountUsername,
    /// [`CredentialParts::service_account_secret`].
    ServiceAccountSecret,
    /// [`CredentialParts::project_id`].
    ProjectId,
}

/// A service account given in part: `present` is set, `missing` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{present:?} is set but {missing:?} is not")]
pub struct IncompleteCredentials {
    /// The part that is set.
    pub present: CredentialPart,
    /// The part it needs.
    pub missing: CredentialPart,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let credentials = Credentials::service_account("svc.user", "s3cr3t-value", "12345");
        let printed = format!("{credentials:?} {}", Secret::new("s3cr3t-value"));
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
        assert!(printed.contains("svc.user"));
    }

    #[cfg(feature = "network")]
    #[test]
    fn the_authorization_header_is_basic_and_sensitive() {
        let credentials = Credentials::service_account("svc.user", "s3cr3t-value", "12345");
        let header = credentials.authorization();
        assert!(header.is_sensitive());
        // base64("svc.user:s3cr3t-value")
        assert_eq!(
            header.to_str().unwrap(),
            "Basic c3ZjLnVzZXI6czNjcjN0LXZhbHVl"
        );
    }

    #[test]
    fn credentials_from_parts_follow_one_precedence() {
        use CredentialPart::*;
        let parts = |username: Option<&str>,
                     secret: Option<&str>,
                     project: Option<&str>,
                     api: Option<&str>,
                     token: Option<&str>| CredentialParts {
            service_account_username: username.map(str::to_owned),
            service_account_secret: secret.map(Secret::from),
            project_id: project.map(str::to_owned),
            api_secret: api.map(Secret::from),
            project_token: token.map(Secret::from),
        };
        let all =
            Credentials::from_parts(parts(Some("u"), Some("s"), Some("1"), Some("a"), Some("t")));
        assert_eq!(all, Ok(Some(Credentials::service_account("u", "s", "1"))));
        let api = Credentials::from_parts(parts(None, None, Some("1"), Some("a"), Some("t")));
        assert_eq!(
            api,
            Ok(Some(Credentials::api_secret_with_project("a", "1")))
        );
        let api = Credentials::from_parts(parts(None, None, None, Some("a"), None));
        assert_eq!(api, Ok(Some(Credentials::api_secret("a"))));
        let token = Credentials::from_parts(parts(None, None, Some("1"), None, Some("t")));
        assert_eq!(token, Ok(Some(Credentials::project_token("t"))));
        assert_eq!(
            Credentials::from_parts(parts(None, None, Some("1"), None, None)),
            Ok(None)
        );
        let incomplete = |present, missing| Err(IncompleteCredentials { present, missing });
        assert_eq!(
            Credentials::from_parts(parts(Some("u"), Some("s"), None, Some("a"), None)),
            incomplete(ServiceAccountUsername, ProjectId)
        );
        assert_eq!(
            Credentials::from_parts(parts(Some("u"), None, Some("1"), None, Some("t"))),
            incomplete(ServiceAccountUsername, ServiceAccountSecret)
        );
        assert_eq!(
            Credentials::from_parts(parts(None, Some("s"), Some("1"), Some("a"), None)),
            incomplete(ServiceAccountSecret, ServiceAccountUsername)
        );
    }

    #[test]
    fn regions_parse_case_insensitively() {
        assert_eq!("EU".parse::<Region>(), Ok(Region::Eu));
        assert_eq!(" in ".parse::<Region>(), Ok(Region::In));
        assert!("uk".parse::<Region>().is_err());
    }
}
