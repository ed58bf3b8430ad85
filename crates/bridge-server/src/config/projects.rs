//! Validation of the Mixpanel projects: the default one (`[mixpanel]`) and
//! the routed ones (`[[projects]]`): names, routes, and connection keys into
//! [`Credentials`], with the errors that say which variables to set.

use mixpanel_client::{
    CredentialPart, CredentialParts, Credentials, IncompleteCredentials, Region,
};

use super::keys::{self, ConnectionVars, DEFAULT_PROJECT_VARS};
use super::raw::{RawProject, Sourced};
use super::validate::{Context, Valued};
use super::{ConfigError, ProjectConfig};

pub(super) fn validate_default_project(
    cx: &mut Context<'_>,
    mut raw: RawProject,
    dry_run: bool,
) -> Result<ProjectConfig, ConfigError> {
    let not_here = "no name or routes in [mixpanel]: the default project takes every batch no [[projects]] entry claims";
    if let Some(name) = raw.name.take() {
        return Err(cx.invalid(
            "mixpanel.name",
            Some(&name.origin),
            not_here,
            format!("{:?}", name.value),
        ));
    }
    for (key, routes) in [
        ("mixpanel.workspaces", raw.workspaces.take()),
        ("mixpanel.app_group_ids", raw.app_group_ids.take()),
    ] {
        if let Some(routes) = routes {
            return Err(cx.invalid(
                key,
                Some(&routes.origin),
                not_here,
                format!("{:?}", routes.value),
            ));
        }
    }
    let section = "[mixpanel]";
    validate_connection(
        cx,
        raw,
        "default",
        "mixpanel",
        (&DEFAULT_PROJECT_VARS, section),
        dry_run,
    )
}

pub(super) fn validate_project(
    cx: &mut Context<'_>,
    mut raw: RawProject,
    project_idx: usize,
    earlier: &[ProjectConfig],
    dry_run: bool,
) -> Result<ProjectConfig, ConfigError> {
    let entry_key = format!("projects[{project_idx}]");
    let Some(name) = raw.name.take() else {
        return Err(ConfigError::Invalid {
            setting: match cx.file {
                Some(file) => format!("{}: {entry_key}", file.path.display()),
                None => entry_key,
            },
            expected: "a name".to_owned(),
            found: "none".to_owned(),
        });
    };
    let name_key = format!("{entry_key}.name");
    let is_valid_name = !name.value.is_empty()
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !is_valid_name || name.value.eq_ignore_ascii_case("default") {
        return Err(cx.invalid(
            &name_key,
            Some(&name.origin),
            "a name of letters, digits, - and _, other than default",
            format!("{:?}", name.value),
        ));
    }
    let mangled = keys::mangle_project_name(&name.value);
    if earlier
        .iter()
        .any(|other| keys::mangle_project_name(&other.name) == mangled)
    {
        return Err(ConfigError::DuplicateProject {
            setting: cx.setting(&name_key, Some(&name.origin)),
            name: name.value,
        });
    }
    let prefix = format!("projects.{}", name.value);
    cx.record(&format!("{prefix}.name"), &name.origin);

    let workspaces = validate_routes(
        cx,
        &format!("{prefix}.workspaces"),
        "workspace",
        raw.workspaces.take(),
        earlier,
        |project| &project.workspaces,
    )?;
    let app_group_ids = validate_routes(
        cx,
        &format!("{prefix}.app_group_ids"),
        "app_group_id",
        raw.app_group_ids.take(),
        earlier,
        |project| &project.app_group_ids,
    )?;
    if workspaces.is_empty() && app_group_ids.is_empty() {
        cx.warnings.push(format!(
            "project {:?} has no workspaces and no app_group_ids: no batch is routed to it",
            name.value
        ));
    }

    let vars = ConnectionVars::for_project(&mangled);
    let section = "its [[projects]] entry";
    let mut project =
        validate_connection(cx, raw, &name.value, &prefix, (&vars, section), dry_run)?;
    project.workspaces = workspaces;
    project.app_group_ids = app_group_ids;
    Ok(project)
}

/// A project's workspaces or app group ids: none may route to an earlier project.
fn validate_routes(
    cx: &mut Context<'_>,
    key: &str,
    kind: &'static str,
    raw: Option<Sourced<Vec<String>>>,
    earlier: &[ProjectConfig],
    routes_of: fn(&ProjectConfig) -> &[String],
) -> Result<Vec<String>, ConfigError> {
    let Some(routes) = cx.names(key, raw, "non-empty names")? else {
        return Ok(Vec::new());
    };
    for value in &routes.value {
        if let Some(other) = earlier
            .iter()
            .find(|other| routes_of(other).contains(value))
        {
            return Err(ConfigError::DuplicateRoute {
                setting: cx.setting(key, routes.origin.as_ref()),
                kind,
                value: value.clone(),
                other: other.name.clone(),
            });
        }
    }
    Ok(routes.value)
}

/// The connection keys of one project, into credentials. `vars` and
/// `section` name where to set what is missing.
fn validate_connection<S: AsRef<str>>(
    cx: &mut Context<'_>,
    raw: RawProject,
    name: &str,
    prefix: &str,
    (vars, section): (&ConnectionVars<S>, &str),
    dry_run: bool,
) -> Result<ProjectConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let missing = |var: &S, field: &str| format!("{} (or {})", var.as_ref(), key(field));

    let project_id = match raw.project_id {
        Some(project_id) => {
            let project_id_key = key("project_id");
            cx.record(&project_id_key, &project_id.origin);
            let id = project_id.value.0;
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                return Err(cx.invalid(
                    &project_id_key,
                    Some(&project_id.origin),
                    "a numeric Mixpanel project id",
                    format!("{id:?}"),
                ));
            }
            Some(Valued {
                value: id,
                origin: Some(project_id.origin),
            })
        }
        None => None,
    };
    let username = match raw.service_account_username {
        Some(username) => {
            let username_key = key("service_account_username");
            let username = cx.text(&username_key, Some(username), "");
            if username.value.is_empty() {
                return Err(cx.invalid(
                    &username_key,
                    username.origin.as_ref(),
                    "a service account username",
                    "an empty string".to_owned(),
                ));
            }
            Some(username)
        }
        None => None,
    };
    let service_account_secret = cx.secret(
        &key("service_account_secret"),
        raw.service_account_secret,
        raw.service_account_secret_file,
    )?;
    let api_secret = cx.secret(&key("api_secret"), raw.api_secret, raw.api_secret_file)?;
    let project_token = cx.secret(
        &key("project_token"),
        raw.project_token,
        raw.project_token_file,
    )?;
    let region = match raw.region {
        Some(region) => {
            let region_key = key("region");
            cx.record(&region_key, &region.origin);
            region.value.parse::<Region>().map_err(|_| {
                cx.invalid(
                    &region_key,
                    Some(&region.origin),
                    "us, eu or in",
                    format!("{:?}", region.value),
                )
            })?
        }
        None => Region::default(),
    };
    let api_url = match raw.api_url {
        Some(api_url) => {
            let api_url_key = key("api_url");
            cx.record(&api_url_key, &api_url.origin);
            let url = api_url.value.trim();
            let is_http = url.starts_with("http://") || url.starts_with("https://");
            if !is_http || url.contains(char::is_whitespace) {
                return Err(cx.invalid(
                    &api_url_key,
                    Some(&api_url.origin),
                    "an http:// or https:// URL",
                    format!("{url:?}"),
                ));
            }
            if url.starts_with("http://") && !super::cohorts_validate::is_loopback_url(url) {
                let setting = cx.setting(&api_url_key, Some(&api_url.origin));
                cx.warnings.push(format!(
                    "{setting} is plain http to a host other than loopback: project {name:?}'s Mixpanel credentials and events travel in clear text"
                ));
            }
            Some(url.to_owned())
        }
        None => None,
    };

    if username.is_some()
        && service_account_secret.is_some()
        && let Some(api_secret) = &api_secret
    {
        let setting = cx.setting(&key("api_secret"), api_secret.origin.as_ref());
        cx.warnings.push(format!(
            "project {name:?}: {setting} is set but unused: the service account is used"
        ));
    }
    // Where each part was set, to name it in an error.
    let setting_of = |cx: &Context<'_>, part: CredentialPart| match part {
        CredentialPart::ServiceAccountUsername => cx.setting(
            &key("service_account_username"),
            username.as_ref().and_then(|value| value.origin.as_ref()),
        ),
        CredentialPart::ServiceAccountSecret => cx.setting(
            &key("service_account_secret"),
            service_account_secret
                .as_ref()
                .and_then(|value| value.origin.as_ref()),
        ),
        CredentialPart::ProjectId => cx.setting(
            &key("project_id"),
            project_id.as_ref().and_then(|value| value.origin.as_ref()),
        ),
    };
    let missing_setting = |part: CredentialPart| match part {
        CredentialPart::ServiceAccountUsername => {
            missing(&vars.service_account_username, "service_account_username")
        }
        CredentialPart::ServiceAccountSecret => {
            missing(&vars.service_account_secret, "service_account_secret")
        }
        CredentialPart::ProjectId => missing(&vars.project_id, "project_id"),
    };
    let parts = CredentialParts {
        service_account_username: username.as_ref().map(|value| value.value.clone()),
        service_account_secret: service_account_secret
            .as_ref()
            .map(|value| value.value.clone()),
        project_id: project_id.as_ref().map(|value| value.value.clone()),
        api_secret: api_secret.as_ref().map(|value| value.value.clone()),
        project_token: project_token.as_ref().map(|value| value.value.clone()),
    };
    let credentials = match Credentials::from_parts(parts) {
        Ok(credentials) => credentials,
        Err(IncompleteCredentials { present, missing }) => {
            return Err(ConfigError::IncompleteCredentials {
                project: name.to_owned(),
                present: setting_of(cx, present),
                missing: missing_setting(missing),
            });
        }
    };
    match &credentials {
        Some(Credentials::ApiSecret { .. }) => cx.warnings.push(format!(
            "project {name:?} uses the API secret, which Mixpanel has deprecated (it retires on 2027-03-03): prefer a service account"
        )),
        Some(_) => {}
        None if dry_run => {}
        None => {
            return Err(ConfigError::NoCredentials {
                project: name.to_owned(),
                hint: format!(
                    "{}, {} and {} (or {}, or {}), the same keys in {section}, or use --dry-run",
                    vars.service_account_username.as_ref(),
                    vars.service_account_secret.as_ref(),
                    vars.project_id.as_ref(),
                    vars.api_secret.as_ref(),
                    vars.project_token.as_ref(),
                ),
            });
        }
    }

    Ok(ProjectConfig {
        name: name.to_owned(),
        workspaces: Vec::new(),
        app_group_ids: Vec::new(),
        credentials,
        project_token: project_token.map(|token| token.value),
        region,
        api_url,
    })
}
