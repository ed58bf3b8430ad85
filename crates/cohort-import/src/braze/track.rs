//! `/users/track`: adds and removes values of array custom attributes of
//! existing users, at most [`MAX_TRACK_OBJECTS`] attribute objects per
//! request, authenticated by the REST API key as a bearer token.
//!
//! Each object is `{"external_id": …}` or `{"email": …}`, with
//! `"_update_existing_only": true` (the bridge never creates users) and
//! `"<attribute>": {"add": […], "remove": […]}`, an empty list left out (the
//! attribute itself too when both are empty).
//!
//! Answers, as Braze documents them:
//! - 2xx with `{"message":"success", …}`: accepted; per-object errors
//!   (`"errors":[{"type":…,"input_array":"attributes","index":i}]`) become
//!   [`RefusedObject`]s, the other objects were applied;
//! - 2xx whose `message` is not `success`, or whose errors cannot be tied
//!   to an object: [`BrazeError::InvalidResponse`] (nothing is known to have
//!   been applied; resending is safe, adding or removing twice is a no-op);
//! - 401/403: [`BrazeError::Auth`]; 400 (e.g. `Max Input Length Exceeded`),
//!   404, 415 and other 4xx: [`BrazeError::Rejected`]; 429, 5xx, timeouts:
//!   retried, then [`BrazeError::Unavailable`] or [`BrazeError::Transport`].

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;

use super::error::redact;
use super::transport::{HttpRequest, HttpResponse};
use super::{BrazeClient, BrazeError};

/// The most attribute objects Braze takes in one `/users/track` request.
pub const MAX_TRACK_OBJECTS: usize = 75;

/// Keys of an attribute object that an attribute name must not shadow.
const RESERVED_KEYS: [&str; 5] = [
    "external_id",
    "email",
    "_update_existing_only",
    "user_alias",
    "braze_id",
];

/// A Braze user identifier the bridge writes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BrazeUser {
    /// The user's `external_id`.
    ExternalId(String),
    /// The user's email address (`email` identifier).
    Email(String),
}

/// One `/users/track` attributes object: add and remove values of one array
/// attribute for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeUpdate {
    /// Whose attribute.
    pub user: BrazeUser,
    /// The array custom attribute's name.
    pub attribute: String,
    /// Values to add (left out of the request when empty).
    pub add: Vec<String>,
    /// Values to remove (left out of the request when empty).
    pub remove: Vec<String>,
}

/// What Braze made of an accepted `/users/track` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackOutcome {
    /// Objects Braze refused, by their index in the request; the others
    /// were applied.
    pub refused: Vec<RefusedObject>,
    /// Attempts the request took (0 when there was nothing to send).
    pub attempts: u32,
}

/// One attributes object Braze refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedObject {
    /// Its index in the updates passed to [`BrazeClient::track_attributes`].
    pub index: usize,
    /// Braze's reason (the error's `type`).
    pub message: String,
}

impl BrazeClient {
    /// Sends `updates` in one `POST /users/track` with
    /// `{"attributes":[…]}`. At most [`MAX_TRACK_OBJECTS`]; more, an empty
    /// attribute name or one that is an identifier key
    /// (`external_id`, `email`, …) is [`BrazeError::Config`] and nothing is
    /// sent. An empty slice sends nothing.
    pub async fn track_attributes(
        &self,
        updates: &[AttributeUpdate],
    ) -> Result<TrackOutcome, BrazeError> {
        if updates.is_empty() {
            return Ok(TrackOutcome::default());
        }
        let body = track_body(updates)?;
        let mut headers = HeaderMap::new();
        let authorization = self.inner.authorization.clone().ok_or_else(|| {
            BrazeError::Config(
                "this client has no REST API key (built with partner_only)".to_owned(),
            )
        })?;
        headers.insert(header::AUTHORIZATION, authorization);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let request = HttpRequest {
            endpoint: "users_track",
            url: format!("{}/users/track", self.inner.base_url),
            headers,
            body,
        };
        let secrets = [self.inner.api_key.expose()];
        let response = self.send_checked(request, &secrets).await?;
        let outcome = read_answer(&response, updates.len(), &secrets)?;
        tracing::debug!(
            objects = updates.len(),
            refused = outcome.refused.len(),
            attempts = outcome.attempts,
            "Sent attribute updates to Braze."
        );
        Ok(outcome)
    }
}

/// The request body, after checking the updates.
pub(crate) fn track_body(updates: &[AttributeUpdate]) -> Result<Bytes, BrazeError> {
    if updates.len() > MAX_TRACK_OBJECTS {
        return Err(BrazeError::Config(format!(
            "{} attribute objects in one /users/track request, Braze takes at most {MAX_TRACK_OBJECTS}",
            updates.len()
        )));
    }
    if let Some(update) = updates.iter().find(|update| {
        update.attribute.is_empty() || RESERVED_KEYS.contains(&update.attribute.as_str())
    }) {
        return Err(BrazeError::Config(format!(
            "{:?} cannot be an attribute name",
            update.attribute
        )));
    }
    #[derive(Serialize)]
    struct Body<'a> {
        attributes: Vec<Object<'a>>,
    }
    let body = Body {
        attributes: updates.iter().map(Object).collect(),
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|error| BrazeError::Config(format!("cannot serialize the attributes: {error}")))
}

/// One attributes object as Braze takes it.
struct Object<'a>(&'a AttributeUpdate);

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Changes<'a> {
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            add: &'a [String],
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            remove: &'a [String],
        }
        let update = self.0;
        let mut map = serializer.serialize_map(None)?;
        match &update.user {
            BrazeUser::ExternalId(id) => map.serialize_entry("external_id", id)?,
            BrazeUser::Email(email) => map.serialize_entry("email", email)?,
        }
        map.serialize_entry("_update_existing_only", &true)?;
        if !update.add.is_empty() || !update.remove.is_empty() {
            let changes = Changes {
                add: &update.add,
                remove: &update.remove,
            };
            map.serialize_entry(&update.attribute, &changes)?;
        }
        map.end()
    }
}

/// Reads a 2xx answer to a request of `n_objects` objects.
pub(crate) fn read_answer(
    response: &HttpResponse,
    n_objects: usize,
    secrets: &[&str],
) -> Result<TrackOutcome, BrazeError> {
    let invalid = |message: String| BrazeError::InvalidResponse {
        status: response.status.as_u16(),
        message: redact(&message, secrets),
    };
    let answer: Value = serde_json::from_slice(&response.body)
        .map_err(|error| invalid(format!("{error}: {}", response.message(secrets))))?;
    if answer.get("message").and_then(Value::as_str) != Some("success") {
        return Err(invalid(response.message(secrets)));
    }
    let errors = match answer.get("errors") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(errors)) => errors.as_slice(),
        Some(_) => {
            return Err(invalid(format!(
                "errors is not a list: {}",
                response.message(secrets)
            )));
        }
    };
    let mut refused = Vec::with_capacity(errors.len());
    for error in errors {
        let index = error
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|index| usize::try_from(index).ok())
            .filter(|&index| index < n_objects)
            .ok_or_else(|| invalid(format!("an error names no object of the request: {error}")))?;
        let message = match error.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(other) => other.to_string(),
            None => error.to_string(),
        };
        refused.push(RefusedObject {
            index,
            message: redact(&message, secrets),
        });
    }
    Ok(TrackOutcome {
        refused,
        attempts: response.attempts,
    })
}
