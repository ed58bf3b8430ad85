//! Mixpanel's cohort sync to a custom webhook: reading a page, checking
//! the caller, recording the page, and the answer Mixpanel expects.
//!
//! Mixpanel POSTs `{"action": …, "parameters": {…, "members": [...]}}`
//! with `action` one of `members` (a full snapshot, over
//! `page_info.total_pages` pages), `add_members` or `remove_members`, at
//! most 1000 members per call, and expects `{"action": <same>, "status":
//! "success"}`. What Mixpanel does with other answers decides what is lost:
//! 400, 401, 403 and 404 PAUSE the sync until someone resumes it in
//! Mixpanel's UI, while 429 and 5xx are retried (5 times in 60 s, then at
//! the next scheduled sync, from page 1). So:
//!
//! | situation | answer |
//! |---|---|
//! | page recorded durably (or recorded before: a replay) | 200 `success` |
//! | wrong or missing Basic credentials (when configured) | 401 `failure` |
//! | malformed page (not JSON, unknown action, bad ids or page numbers, too many members) | 400 `failure` with a message Mixpanel shows its user |
//! | the store cannot record it (disk error, full disk), shutting down | 503 with `Retry-After` |
//!
//! Ids may be strings or numbers. A page without `mixpanel_session_id` is
//! keyed by a digest of its body, so an exact resend is still a replay.
//! [`WebhookReceiver`] is independent of any HTTP framework: give it the
//! `Authorization` header and the body, send back its [`WebhookAnswer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::identity::{IdentityRule, Member};
use crate::stats::CohortStats;
use crate::store::{CohortKey, MembershipPage, MembershipStore, PageKind, PageMember};

/// The most members one page may hold; Mixpanel sends 1000.
pub const DEFAULT_MAX_MEMBERS_PER_PAGE: usize = 10_000;

/// The largest `total_pages` accepted: 10 million members (Mixpanel's
/// cap per cohort) in pages of 1000, with room to spare.
const MAX_TOTAL_PAGES: u32 = 1_000_000;

/// The longest id or name accepted, in bytes.
const MAX_ID_BYTES: usize = 1024;

/// Seconds Mixpanel is asked to wait after a 503.
const RETRY_AFTER_SECS: u64 = 5;

/// How the webhook reads and checks pages.
#[derive(Clone)]
pub struct WebhookConfig {
    identity: IdentityRule,
    credential_digests: Vec<[u8; 32]>,
    max_members_per_page: usize,
}

/// One page of Mixpanel's cohort sync, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookPage {
    /// Snapshot, add or remove.
    pub kind: PageKind,
    /// The cohort.
    pub cohort: CohortKey,
    /// The cohort's name.
    pub cohort_name: String,
    /// The sync session (or a digest of the body when Mixpanel sent none).
    pub session_id: String,
    /// The page number, from 1.
    pub page: u32,
    /// Pages in the session; `None` for a snapshot page without
    /// `page_info` (it cannot complete its snapshot).
    pub total_pages: Option<u32>,
    /// The members as Mixpanel describes them.
    pub members: Vec<Member>,
}

/// Why a page cannot be read; the message is shown in Mixpanel's UI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PageError {
    /// The action the page named, if it could be read.
    pub action: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The HTTP answer to one webhook call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// The status code.
    pub status: u16,
    /// `Retry-After` in seconds, for a 503.
    pub retry_after_secs: Option<u64>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// What happened, for logs and metrics.
    pub outcome: WebhookOutcome,
}

/// What a webhook call came to: a closed set, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Recorded.
    Recorded,
    /// Recorded before: nothing changed.
    Replayed,
    /// Refused: credentials.
    Unauthorized,
    /// Refused: malformed.
    Malformed,
    /// Not recorded: the store failed or the service is stopping.
    Unavailable,
}

/// Receives webhook calls into a [`MembershipStore`].
pub struct WebhookReceiver<S> {
    store: Arc<S>,
    config: WebhookConfig,
    stats: Arc<CohortStats>,
    changed: Arc<tokio::sync::Notify>,
    accepting: AtomicBool,
}

impl WebhookConfig {
    /// Members become Braze users by `identity`; no credentials needed.
    pub fn new(identity: IdentityRule) -> WebhookConfig {
        WebhookConfig {
            identity,
            credential_digests: Vec::new(),
            max_members_per_page: DEFAULT_MAX_MEMBERS_PER_PAGE,
        }
    }

    /// Requires Basic auth with any of these `user:password` pairs (several,
    /// so that a rotation loses nothing). They are kept only as digests.
    pub fn credentials<'a>(mut self, pairs: impl IntoIterator<Item = &'a str>) -> WebhookConfig {
        self.credential_digests = pairs
            .into_iter()
            .map(|pair| Sha256::digest(pair.as_bytes()).into())
            .collect();
        self
    }

    /// The most members a page may hold.
    pub fn max_members_per_page(mut self, max: usize) -> WebhookConfig {
        self.max_members_per_page = max.max(1);
        self
    }

    /// The identity rule.
    pub fn identity(&self) -> &IdentityRule {
        &self.identity
    }

    /// Whether an `Authorization` header value is accepted. Compares every
    /// configured credential in time independent of where they differ.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        if self.credential_digests.is_empty() {
            return true;
        }
        let Some(pair) = authorization.and_then(basic_pair) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(&pair).into();
        let mut matched = 0u8;
        for known in &self.credential_digests {
            let diff = known
                .iter()
                .zip(&presented)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b));
            matched |= u8::from(diff == 0);
        }
        matched == 1
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("identity", &self.identity)
            .field("credentials", &self.credential_digests.len())
            .field("max_members_per_page", &self.max_members_per_page)
            .finish()
    }
}

/// The decoded `user:password` of a `Basic` header value.
fn basic_pair(value: &str) -> Option<Vec<u8>> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
}

impl<S: MembershipStore> WebhookReceiver<S> {
    /// A receiver recording into `store`.
    pub fn new(store: Arc<S>, config: WebhookConfig) -> WebhookReceiver<S> {
        WebhookReceiver {
            store,
            config,
            stats: Arc::new(CohortStats::default()),
            changed: Arc::new(tokio::sync::Notify::new()),
            accepting: AtomicBool::new(true),
        }
    }

    /// Counts into `stats` (shared with the writer and the metrics).
    pub fn with_stats(mut self, stats: Arc<CohortStats>) -> WebhookReceiver<S> {
        self.stats = stats;
        self
    }

    /// Wakes `changed` whenever a page journals a change (the writer waits
    /// on it, so changes reach Braze within moments).
    pub fn with_notify(mut self, changed: Arc<tokio::sync::Notify>) -> WebhookReceiver<S> {
        self.changed = changed;
        self
    }

    /// How pages are read and checked.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// From now on, answer 503 (shutting down).
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// Handles one call: checks the credentials, reads the page, records it.
    pub async fn receive(&self, authorization: Option<&str>, body: &[u8]) -> WebhookAnswer {
        if !self.config.accepts(authorization) {
            self.stats.count_webhook(WebhookOutcome::Unauthorized);
            return failure(
                401,
                None,
                "invalid credentials for this webhook".to_owned(),
                WebhookOutcome::Unauthorized,
            );
        }
        let page = match parse_page(body, self.config.max_members_per_page) {
            Ok(page) => page,
            Err(error) => {
                self.stats.count_webhook(WebhookOutcome::Malformed);
                tracing::debug!(error = %error.message, "Refused a malformed cohort page.");
                return failure(400, error.action, error.message, WebhookOutcome::Malformed);
            }
        };
        let action = page.kind.as_action();
        if !self.accepting.load(Ordering::Relaxed) {
            self.stats.count_webhook(WebhookOutcome::Unavailable);
            return unavailable(action, "the bridge is shutting down; retry later");
        }
        let cohort = page.cohort.clone();
        let n_members = page.members.len();
        let resolved = resolve_page(page, &self.config.identity);
        match self.store.apply_page(resolved).await {
            Ok(outcome) => {
                self.stats.count_page(&outcome);
                let result = if outcome.replayed {
                    WebhookOutcome::Replayed
                } else {
                    WebhookOutcome::Recorded
                };
                self.stats.count_webhook(result);
                if outcome.added + outcome.removed > 0 {
                    self.changed.notify_one();
                }
                tracing::debug!(
                    cohort = %cohort,
                    action,
                    n_members,
                    added = outcome.added,
                    removed = outcome.removed,
                    unmatched = outcome.unmatched,
                    replayed = outcome.replayed,
                    "Recorded a cohort page."
                );
                WebhookAnswer {
                    status: 200,
                    retry_after_secs: None,
                    body: json!({"action": action, "status": "success"})
                        .to_string()
                        .into_bytes(),
                    outcome: result,
                }
            }
            Err(error) => {
                self.stats.count_webhook(WebhookOutcome::Unavailable);
                tracing::warn!(cohort = %cohort, error = %error, "Cannot record a cohort page; Mixpanel will retry.");
                unavailable(
                    action,
                    "the bridge cannot record this page now; retry later",
                )
            }
        }
    }
}

/// Resolves each member of a page to a Braze user by `identity`.
pub fn resolve_page(page: WebhookPage, identity: &IdentityRule) -> MembershipPage {
    let members = page
        .members
        .iter()
        .map(|member| PageMember {
            distinct_id: member.distinct_id.clone().unwrap_or_default(),
            identity: identity.resolve(member),
        })
        .collect();
    MembershipPage {
        cohort: page.cohort,
        cohort_name: page.cohort_name,
        kind: page.kind,
        session_id: page.session_id,
        page: page.page,
        total_pages: page.total_pages,
        members,
    }
}

fn failure(
    status: u16,
    action: Option<String>,
    message: String,
    outcome: WebhookOutcome,
) -> WebhookAnswer {
    WebhookAnswer {
        status,
        retry_after_secs: None,
        body: json!({
            "action": action,
            "status": "failure",
            "error": {"message": message, "code": status},
        })
        .to_string()
        .into_bytes(),
        outcome,
    }
}

fn unavailable(action: &str, message: &str) -> WebhookAnswer {
    let mut answer = failure(
        503,
        Some(action.to_owned()),
        message.to_owned(),
        WebhookOutcome::Unavailable,
    );
    answer.retry_after_secs = Some(RETRY_AFTER_SECS);
    answer
}

#[derive(Deserialize)]
struct RawBody<'a> {
    action: Option<Value>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawParameters<'a> {
    mixpanel_project_id: Option<Value>,
    mixpanel_cohort_id: Option<Value>,
    mixpanel_cohort_name: Option<Value>,
    mixpanel_session_id: Option<Value>,
    page_info: Option<Value>,
    /// Read on its own, so that a page with too many members is refused
    /// as soon as the cap is passed, before the rest is built.
    #[serde(borrow)]
    members: Option<&'a RawValue>,
}

/// Reads and checks one page.
pub fn parse_page(body: &[u8], max_members: usize) -> Result<WebhookPage, PageError> {
    let fail = |action: Option<&str>, message: String| PageError {
        action: action.map(str::to_owned),
        message,
    };
    let raw: RawBody<'_> = serde_json::from_slice(body)
        .map_err(|error| fail(None, format!("the body is not a JSON object: {error}")))?;
    let action_text = match &raw.action {
        Some(Value::String(text)) => text.as_str(),
        _ => {
            return Err(fail(
                None,
                "\"action\" is missing or not a string".to_owned(),
            ));
        }
    };
    let action = Some(action_text);
    let kind = match action_text {
        "members" => PageKind::Snapshot,
        "add_members" => PageKind::Add,
        "remove_members" => PageKind::Remove,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(fail(
                None,
                format!(
                    "unknown action {shown:?}: expected members, add_members or remove_members"
                ),
            ));
        }
    };
    let parameters: RawParameters<'_> = raw
        .parameters
        .ok_or_else(|| fail(action, "\"parameters\" is missing".to_owned()))
        .and_then(|text| {
            serde_json::from_str(text.get()).map_err(|error| {
                fail(
                    action,
                    format!("\"parameters\" is not a valid object: {error}"),
                )
            })
        })?;
    let id = |key: &str,
              value: &Option<Value>,
              required: bool|
     -> Result<Option<String>, PageError> {
        match value {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(fail(action, format!("parameters.{key} is missing"))),
            Some(Value::String(text)) if !text.trim().is_empty() && text.len() <= MAX_ID_BYTES => {
                Ok(Some(text.trim().to_owned()))
            }
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(fail(
                action,
                format!("parameters.{key} must be a non-empty string or a number"),
            )),
        }
    };
    let project_id =
        id("mixpanel_project_id", &parameters.mixpanel_project_id, true)?.unwrap_or_default();
    let cohort_id =
        id("mixpanel_cohort_id", &parameters.mixpanel_cohort_id, true)?.unwrap_or_default();
    let cohort_name = match &parameters.mixpanel_cohort_name {
        Some(Value::String(name)) => name.chars().take(MAX_ID_BYTES).collect(),
        _ => String::new(),
    };
    let session_id = match id(
        "mixpanel_session_id",
        &parameters.mixpanel_session_id,
        false,
    )? {
        Some(session_id) => session_id,
        None => format!("body-sha256:{:x}", Sha256::digest(body)),
    };
    let (page, total_pages) =
        page_info(kind, parameters.page_info.as_ref()).map_err(|message| fail(action, message))?;
    let members = match parameters.members {
        None => Vec::new(),
        Some(text) => {
            let mut reader = serde_json::Deserializer::from_str(text.get());
            MembersSeed { max: max_members }
                .deserialize(&mut reader)
                .map_err(|error| fail(action, format!("parameters.members: {error}")))?
        }
    };
    Ok(WebhookPage {
        kind,
        cohort: CohortKey {
            project_id,
            cohort_id,
        },
        cohort_name,
        session_id,
        page,
        total_pages,
        members,
    })
}

/// Reads a list of member objects, refusing it as soon as it passes `max`.
struct MembersSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for MembersSeed {
    type Value = Vec<Member>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Member>, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of member objects")
    }

    fn visit_none<E: de::Error>(self) -> Result<Vec<Member>, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<Member>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Member>, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Member>, A::Error> {
        let mut members = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(member) = seq.next_element::<Value>()? {
            if members.len() == self.max {
                return Err(de::Error::custom(format!(
                    "more than {} members; at most {} are accepted",
                    self.max, self.max
                )));
            }
            match member {
                Value::Object(properties) => members.push(read_member(properties)),
                _ => {
                    return Err(de::Error::custom(format!(
                        "member {} is not an object",
                        members.len()
                    )));
                }
            }
        }
        Ok(members)
    }
}

/// `(page_count, total_pages)`. Without `page_info`, a diff page is 1 of 1,
/// and a snapshot page is of an unknown number of pages: it adds its
/// members but can never complete the snapshot, since removing everyone it
/// does not list would be a guess. A `total_pages` of 0 is an empty sync:
/// page 1 of 1.
fn page_info(kind: PageKind, value: Option<&Value>) -> Result<(u32, Option<u32>), String> {
    let info = match value {
        None | Some(Value::Null) if kind == PageKind::Snapshot => return Ok((1, None)),
        None | Some(Value::Null) => return Ok((1, Some(1))),
        Some(Value::Object(info)) => info,
        Some(_) => return Err("parameters.page_info must be an object".to_owned()),
    };
    let number = |key: &str| -> Result<u32, String> {
        let value = info
            .get(key)
            .ok_or_else(|| format!("parameters.page_info.{key} is missing"))?;
        let number = match value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        };
        number
            .and_then(|number| u32::try_from(number).ok())
            .filter(|number| *number <= MAX_TOTAL_PAGES)
            .ok_or_else(|| {
                format!("parameters.page_info.{key} must be an integer from 1 to {MAX_TOTAL_PAGES}")
            })
    };
    let total_pages = number("total_pages")?;
    if total_pages == 0 {
        return Ok((1, Some(1)));
    }
    let page = number("page_count")?;
    if page == 0 {
        return Err(format!(
            "parameters.page_info.page_count must be an integer from 1 to {MAX_TOTAL_PAGES}"
        ));
    }
    if page > total_pages {
        return Err(format!(
            "parameters.page_info.page_count {page} is beyond total_pages {total_pages}"
        ));
    }
    Ok((page, Some(total_pages)))
}

/// A member object: `mixpanel_distinct_id` (or `$distinct_id`), and the rest
/// as properties.
fn read_member(properties: Map<String, Value>) -> Member {
    let distinct_id = ["mixpanel_distinct_id", "$distinct_id", "distinct_id"]
        .iter()
        .find_map(|key| match properties.get(*key) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        });
    Member {
        distinct_id,
        properties,
    }
}

#[cfg(test)]
mod tests;
