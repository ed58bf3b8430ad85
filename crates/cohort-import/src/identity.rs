//! Which Braze user a Mixpanel cohort member is.
//!
//! The rule is the operator's choice ([`IdentityRule`]):
//! - `mixpanel_distinct_id` (the default): the member's `distinct_id` is the
//!   Braze `external_id`. The Currents export sends Braze's
//!   `external_user_id` as Mixpanel's `distinct_id`, so the ids round-trip.
//! - a member property, such as `$braze_external_id` (what Mixpanel's own
//!   Braze sync reads): its value is the Braze `external_id`.
//! - `email`: the member's email address identifies the Braze user.
//!
//! A member without a usable id is not sent: it gets an
//! [`UnmatchedReason`], which the store counts and lists.

use serde_json::{Map, Value};

use crate::braze::BrazeUser;

/// The longest `external_id` Braze accepts, in bytes.
pub const MAX_EXTERNAL_ID_BYTES: usize = 987;

/// How a Mixpanel member becomes a Braze user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IdentityRule {
    /// `distinct_id` as the Braze `external_id`.
    #[default]
    DistinctId,
    /// This member property as the Braze `external_id`.
    Property(String),
    /// The member's email address as the Braze `email`.
    Email,
}

/// Why a member cannot be sent to Braze. A closed, snake_case vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnmatchedReason {
    /// The member has no `distinct_id`.
    NoDistinctId,
    /// The member lacks the configured property (or it is empty).
    NoProperty,
    /// The member has no email address.
    NoEmail,
    /// The email address has no `@`, or holds spaces or control characters.
    InvalidEmail,
    /// The id is longer than Braze's 987 bytes.
    IdTooLong,
    /// The id is neither text nor a number (an object, a list, a boolean).
    NotText,
    /// The id holds control characters.
    ControlCharacters,
}

/// A member as Mixpanel describes it: its `distinct_id` (if it has one)
/// and its other properties (`email`, `$braze_external_id`, …).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Member {
    /// `mixpanel_distinct_id` (webhook) or `$distinct_id` (Query API).
    pub distinct_id: Option<String>,
    /// The other properties, as Mixpanel sent them.
    pub properties: Map<String, Value>,
}

impl IdentityRule {
    /// Reads the configuration's spelling: `mixpanel_distinct_id`, `email`,
    /// or `property:<name>`.
    pub fn parse(text: &str) -> Option<IdentityRule> {
        let text = text.trim();
        match text {
            "mixpanel_distinct_id" | "distinct_id" => Some(IdentityRule::DistinctId),
            "email" => Some(IdentityRule::Email),
            _ => {
                let name = text.strip_prefix("property:")?.trim();
                (!name.is_empty()).then(|| IdentityRule::Property(name.to_owned()))
            }
        }
    }

    /// The configuration's spelling, as [`IdentityRule::parse`] reads it.
    pub fn as_config(&self) -> String {
        match self {
            IdentityRule::DistinctId => "mixpanel_distinct_id".to_owned(),
            IdentityRule::Email => "email".to_owned(),
            IdentityRule::Property(name) => format!("property:{name}"),
        }
    }

    /// The profile properties a Query API pull must ask for.
    pub fn output_properties(&self) -> Vec<String> {
        match self {
            IdentityRule::DistinctId => Vec::new(),
            IdentityRule::Email => vec!["$email".to_owned()],
            IdentityRule::Property(name) => vec![name.clone()],
        }
    }

    /// The Braze user for `member`, or why there is none.
    pub fn resolve(&self, member: &Member) -> Result<BrazeUser, UnmatchedReason> {
        match self {
            IdentityRule::DistinctId => {
                let id = member
                    .distinct_id
                    .as_deref()
                    .ok_or(UnmatchedReason::NoDistinctId)?;
                external_id(id, UnmatchedReason::NoDistinctId)
            }
            IdentityRule::Property(name) => {
                let value =
                    property(&member.properties, name).ok_or(UnmatchedReason::NoProperty)?;
                external_id(&text_of(value)?, UnmatchedReason::NoProperty)
            }
            IdentityRule::Email => {
                let value = property(&member.properties, "$email")
                    .or_else(|| property(&member.properties, "email"))
                    .ok_or(UnmatchedReason::NoEmail)?;
                let text = text_of(value)?;
                let email = text.trim();
                if email.is_empty() {
                    return Err(UnmatchedReason::NoEmail);
                }
                let is_valid = email.contains('@')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
                    && email.len() <= MAX_EXTERNAL_ID_BYTES;
                if !is_valid {
                    return Err(UnmatchedReason::InvalidEmail);
                }
                Ok(BrazeUser::Email(email.to_ascii_lowercase()))
            }
        }
    }
}

impl UnmatchedReason {
    /// Every reason, in a fixed order (for counters).
    pub const ALL: [UnmatchedReason; 7] = [
        UnmatchedReason::NoDistinctId,
        UnmatchedReason::NoProperty,
        UnmatchedReason::NoEmail,
        UnmatchedReason::InvalidEmail,
        UnmatchedReason::IdTooLong,
        UnmatchedReason::NotText,
        UnmatchedReason::ControlCharacters,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            UnmatchedReason::NoDistinctId => "no_distinct_id",
            UnmatchedReason::NoProperty => "no_property",
            UnmatchedReason::NoEmail => "no_email",
            UnmatchedReason::InvalidEmail => "invalid_email",
            UnmatchedReason::IdTooLong => "id_too_long",
            UnmatchedReason::NotText => "not_text",
            UnmatchedReason::ControlCharacters => "control_characters",
        }
    }

    /// The reason named `name`.
    pub fn from_name(name: &str) -> Option<UnmatchedReason> {
        UnmatchedReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
    }
}

impl std::fmt::Display for UnmatchedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A property by its name, tolerating a missing or extra leading `$`
/// (the webhook sends `email`, the Query API `$email`).
fn property<'a>(properties: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let found = properties
        .get(name)
        .or_else(|| match name.strip_prefix('$') {
            Some(bare) => properties.get(bare),
            None => properties.get(&format!("${name}")),
        })?;
    (!found.is_null()).then_some(found)
}

/// A string or a number as text; Mixpanel sends ids as either.
fn text_of(value: &Value) -> Result<String, UnmatchedReason> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        _ => Err(UnmatchedReason::NotText),
    }
}

fn external_id(id: &str, if_empty: UnmatchedReason) -> Result<BrazeUser, UnmatchedReason> {
    if id.trim().is_empty() {
        return Err(if_empty);
    }
    if id.len() > MAX_EXTERNAL_ID_BYTES {
        return Err(UnmatchedReason::IdTooLong);
    }
    if id.chars().any(char::is_control) {
        return Err(UnmatchedReason::ControlCharacters);
    }
    Ok(BrazeUser::ExternalId(id.to_owned()))
}

#[cfg(test)]
mod tests;
