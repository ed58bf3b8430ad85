//! Mixpanel connection flags shared by the commands that talk to Mixpanel,
//! each with its `MIXPANEL_*` environment variable.

use std::time::Duration;

use anyhow::bail;
use mixpanel_client::{
    Client, CredentialPart, CredentialParts, Credentials, IncompleteCredentials, Region, Secret,
};

/// How to reach and authenticate with one Mixpanel project.
#[derive(clap::Args, Debug)]
pub(crate) struct MixpanelArgs {
    /// Mixpanel project id (needed with a service account).
    #[arg(long, env = "MIXPANEL_PROJECT_ID")]
    project_id: Option<String>,

    /// Service account username.
    #[arg(long, env = "MIXPANEL_SERVICE_ACCOUNT_USERNAME")]
    service_account_username: Option<String>,

    /// Service account secret (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "MIXPANEL_SERVICE_ACCOUNT_SECRET", hide_env_values = true)]
    service_account_secret: Option<String>,

    /// Legacy project API secret (deprecated by Mixpanel; retires 2027-03-03).
    #[arg(long, env = "MIXPANEL_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,

    /// Project token (accepted by /import when no other credentials are given).
    #[arg(long, env = "MIXPANEL_PROJECT_TOKEN", hide_env_values = true)]
    project_token: Option<String>,

    /// Data residency region: us, eu or in.
    #[arg(long, env = "MIXPANEL_REGION", default_value = "us")]
    region: Region,

    /// Base URL to use instead of Mixpanel's hosts (a proxy or a test server).
    #[arg(long, env = "MIXPANEL_API_URL")]
    api_url: Option<String>,

    /// Seconds allowed for one request attempt.
    #[arg(long, default_value_t = 60)]
    request_timeout_secs: u64,
}

impl MixpanelArgs {
    /// The credentials, by `Credentials::from_parts`'s precedence: service
    /// account, API secret, token.
    pub(crate) fn credentials(&self) -> anyhow::Result<Credentials> {
        let parts = CredentialParts {
            service_account_username: self.service_account_username.clone(),
            service_account_secret: self.service_account_secret.as_deref().map(Secret::from),
            project_id: self.project_id.clone(),
            api_secret: self.api_secret.as_deref().map(Secret::from),
            project_token: self.project_token.as_deref().map(Secret::from),
        };
        match Credentials::from_parts(parts) {
            Ok(Some(credentials)) => Ok(credentials),
            Ok(None) => bail!(
                "no Mixpanel credentials: set MIXPANEL_SERVICE_ACCOUNT_USERNAME, MIXPANEL_SERVICE_ACCOUNT_SECRET and MIXPANEL_PROJECT_ID (or MIXPANEL_API_SECRET, or MIXPANEL_PROJECT_TOKEN)"
            ),
            Err(IncompleteCredentials { present, missing }) => bail!(
                "{} is set but {} is not",
                variable(present),
                variable(missing)
            ),
        }
    }

    /// The project token, when one is given: the mapping puts it in every
    /// event as `token`, as `serve` does.
    pub(crate) fn project_token(&self) -> Option<&str> {
        self.project_token.as_deref()
    }

    /// A client builder with everything but the per-command settings.
    pub(crate) fn client_builder(&self) -> anyhow::Result<mixpanel_client::ClientBuilder> {
        let mut builder = Client::builder(self.credentials()?)
            .region(self.region)
            .request_timeout(Duration::from_secs(self.request_timeout_secs.max(1)));
        if let Some(url) = &self.api_url {
            builder = builder.base_url(url.as_str());
        }
        Ok(builder)
    }
}

/// The variable (or flag) that sets a part of the credentials.
fn variable(part: CredentialPart) -> &'static str {
    match part {
        CredentialPart::ServiceAccountUsername => "MIXPANEL_SERVICE_ACCOUNT_USERNAME",
        CredentialPart::ServiceAccountSecret => "MIXPANEL_SERVICE_ACCOUNT_SECRET",
        CredentialPart::ProjectId => "MIXPANEL_PROJECT_ID (or --project-id)",
    }
}
