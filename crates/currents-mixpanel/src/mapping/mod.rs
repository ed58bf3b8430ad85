//! Currents → Mixpanel: one Braze Currents event becomes one Mixpanel event,
//! exactly as Braze's own Mixpanel export would send it, or a counted reason
//! why it is not sent.
//!
//! The rules (see `docs/mapping.md` for each decision):
//! 1. events whose type Braze does not export are skipped (`not_exported_type`);
//!    so are types the operator filtered out (`filtered`) and users without a
//!    usable external id (`no_external_user_id`), in that order of precedence;
//! 2. the name comes from the mapping table; custom events are named
//!    `[Braze Custom Event] <name>`; unknown types keep their raw type name;
//! 3. the envelope (`$partner_id`, `distinct_id`, `$insert_id`, `time`,
//!    `token`) is always present and no event property can overwrite it;
//! 4. every property plus `user.device_id` is renamed, then kept if the type's
//!    list names it, the list is open (`*`), or Braze's tables do not know the
//!    field (a field added since); `null` values are dropped;
//! 5. custom and purchase properties are expanded with their prefixes.

mod filter;
mod generated;
mod identity;
mod key_table;
mod rules;

use std::borrow::Cow;

use currents_model::{Event, EventType, EventTypeName, InvalidEvent, NestedProperties};
use mixpanel_client::{Event as MixpanelEvent, Properties, PropertyValue};
use serde_json::value::RawValue;

pub use filter::TypeFilter;
use key_table::KeyFate;
use rules::ExportName;

/// What the operator can set about the mapping.
#[derive(Debug, Clone, Default)]
pub struct MappingConfig {
    /// The Mixpanel project token, sent as `token` when set.
    pub project_token: Option<String>,
    /// Which event types to export.
    pub type_filter: TypeFilter,
}

/// Maps Currents events to Mixpanel events under one configuration.
#[derive(Debug, Clone, Default)]
pub struct Mapper {
    config: MappingConfig,
}

/// What became of one input event. Every event gets exactly one.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// It becomes this Mixpanel event.
    Mapped(MixpanelEvent<'a>),
    /// It is deliberately not sent, for this reason.
    Skipped(SkipReason),
    /// It cannot be read; it should be kept where an operator can see it.
    Invalid(InvalidEvent),
}

/// Why a readable event is not sent. A closed vocabulary: see [`SkipReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Braze's Mixpanel export does not send this event type.
    NotExportedType,
    /// The operator's type filter leaves this type out.
    Filtered,
    /// The user has no external id (or a placeholder one): Mixpanel needs a
    /// real `distinct_id`, and Braze's export skips these users too.
    NoExternalUserId,
}

impl SkipReason {
    /// Every reason, for exhaustive counters.
    pub const ALL: [SkipReason; 3] = [
        SkipReason::NotExportedType,
        SkipReason::Filtered,
        SkipReason::NoExternalUserId,
    ];

    /// The reason's snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotExportedType => "not_exported_type",
            SkipReason::Filtered => "filtered",
            SkipReason::NoExternalUserId => "no_external_user_id",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many envelope keys an event carries at most.
const N_ENVELOPE_KEYS: usize = 5;

const CUSTOM_PROPERTY_PREFIX: &str = "[Custom event property]";
const PURCHASE_PROPERTY_PREFIX: &str = "[Purchase property]";

impl Mapper {
    /// A mapper with this configuration.
    pub fn new(config: MappingConfig) -> Mapper {
        Mapper { config }
    }

    /// The configuration in use.
    pub fn config(&self) -> &MappingConfig {
        &self.config
    }

    /// Parses and maps one event given as JSON text.
    pub fn map_raw<'a>(&'a self, raw: &'a RawValue) -> Outcome<'a> {
        match Event::from_raw(raw) {
            Ok(event) => self.map_event(event),
            Err(invalid) => Outcome::Invalid(invalid),
        }
    }

    /// Maps one event as [`currents_model::Batch::parse_events`] gives it.
    pub fn map_parsed<'a>(&'a self, parsed: Result<Event<'a>, InvalidEvent>) -> Outcome<'a> {
        match parsed {
            Ok(event) => self.map_event(event),
            Err(invalid) => Outcome::Invalid(invalid),
        }
    }

    /// Maps a batch of raw events, one outcome per event, in order.
    pub fn map_batch<'a>(&'a self, events: &[&'a RawValue]) -> Vec<Outcome<'a>> {
        events.iter().map(|raw| self.map_raw(raw)).collect()
    }

    /// Maps one parsed event.
    pub fn map_event<'a>(&'a self, event: Event<'a>) -> Outcome<'a> {
        let rule = rules::lookup(&event.event_type);
        let name = match rule.map(|rule| rule.name) {
            Some(ExportName::NotExported) => return Outcome::Skipped(SkipReason::NotExportedType),
            Some(ExportName::Named(name)) => Some(name),
            None => None,
        };
        if !self.config.type_filter.allows(event.event_type.as_str()) {
            return Outcome::Skipped(SkipReason::Filtered);
        }
        let distinct_id = match event.user.external_user_id {
            Some(id) if identity::is_usable_distinct_id(&id) => id,
            _ => return Outcome::Skipped(SkipReason::NoExternalUserId),
        };

        let known_type = event.event_type.known();
        let event_name: Cow<'a, str> = match (name, event.custom_event_name) {
            (Some(prefix), Some(custom_name)) => Cow::Owned(format!("{prefix} {custom_name}")),
            (Some(name), None) => Cow::Borrowed(name),
            (None, _) => match event.event_type {
                EventTypeName::Known(known) => Cow::Borrowed(known.name()),
                EventTypeName::Other(raw_name) => raw_name,
            },
        };
        let property_list = rule.map_or(rules::PropertyList::All, |rule| rule.properties);

        let nested_len =
            nested_len(&event.custom_properties) + nested_len(&event.purchase_properties);
        let mut properties =
            Properties::with_capacity(N_ENVELOPE_KEYS + event.properties.len() + 1 + nested_len);
        properties.insert("$partner_id", PropertyValue::String(Cow::Borrowed("braze")));
        properties.insert("distinct_id", PropertyValue::String(distinct_id));
        properties.insert(
            "$insert_id",
            PropertyValue::String(identity::insert_id(event.id)),
        );
        properties.insert("time", PropertyValue::Integer(event.time));
        if let Some(token) = &self.config.project_token {
            properties.insert("token", PropertyValue::String(Cow::Borrowed(token)));
        }

        for property in event.properties {
            let output_key = match key_fate(known_type, property_list, &property.key) {
                KeyFate::Sent(output) => Cow::Borrowed(output),
                KeyFate::SentAsIs => property.key,
                KeyFate::Dropped => continue,
            };
            if property.value.get() == "null" {
                // Null means "not set", also over an earlier duplicate key.
                properties.remove(&output_key);
            } else {
                properties.insert(output_key, PropertyValue::Json(property.value));
            }
        }
        if let Some(device_id) = event.user.device_id
            && key_fate(known_type, property_list, "device_id") != KeyFate::Dropped
        {
            properties.insert("device_id", PropertyValue::String(device_id));
        }
        insert_prefixed(
            &mut properties,
            CUSTOM_PROPERTY_PREFIX,
            event.custom_properties,
        );
        insert_prefixed(
            &mut properties,
            PURCHASE_PROPERTY_PREFIX,
            event.purchase_properties,
        );

        Outcome::Mapped(MixpanelEvent {
            name: event_name,
            properties,
        })
    }
}

/// The envelope's keys, which properties never overwrite.
const ENVELOPE_KEYS: [&str; N_ENVELOPE_KEYS] =
    ["$partner_id", "distinct_id", "$insert_id", "time", "token"];

/// The fields Braze's Mixpanel export renames, and their new names.
const RENAMES: [(&str, &str); 4] = [
    ("device_model", "$device"),
    ("os_version", "$os"),
    ("content_card_id", "card_id"),
    (
        "canvas_step_message_variation_id",
        "canvas_step_message_variation_api_id",
    ),
];

/// The name Braze's Mixpanel export gives a field it renames.
fn renamed(key: &str) -> Option<&'static str> {
    RENAMES
        .iter()
        .find(|(from, _)| *from == key)
        .map(|(_, to)| *to)
}

/// What happens to a property key: from the key table for a known type,
/// decided key by key for a type the tables do not know.
fn key_fate(known_type: Option<EventType>, list: rules::PropertyList, key: &str) -> KeyFate {
    match known_type {
        Some(known) => key_table::fate(known, key),
        None => match output_key_for(None, list, key) {
            None => KeyFate::Dropped,
            Some(_) => renamed(key).map_or(KeyFate::SentAsIs, KeyFate::Sent),
        },
    }
}

/// The key a property is sent under, or `None` when it is not sent: it is
/// renamed, then kept unless it is an envelope key, if the type's list names
/// it or Braze's tables do not know the field (a field added since).
fn output_key_for(
    known_type: Option<EventType>,
    list: rules::PropertyList,
    input_key: &str,
) -> Option<&str> {
    let output = renamed(input_key).unwrap_or(input_key);
    let sent = !ENVELOPE_KEYS.contains(&output)
        && (list.contains(output) || known_type.is_some_and(|known| !known.has_field(input_key)));
    sent.then_some(output)
}

fn nested_len(nested: &Option<NestedProperties<'_>>) -> usize {
    match nested {
        Some(NestedProperties::Object(list)) => list.len(),
        Some(NestedProperties::Undecodable(_)) => 1,
        None => 0,
    }
}

/// Adds custom or purchase properties as `"<prefix> <key>"`; a value that is
/// not an object is kept whole under the bare prefix.
fn insert_prefixed<'a>(
    properties: &mut Properties<'a>,
    prefix: &'static str,
    nested: Option<NestedProperties<'a>>,
) {
    match nested {
        None => {}
        Some(NestedProperties::Object(list)) => {
            for property in list {
                let mut key = String::with_capacity(prefix.len() + 1 + property.key.len());
                key.push_str(prefix);
                key.push(' ');
                key.push_str(&property.key);
                if property.is_null() {
                    properties.remove(&key);
                } else {
                    properties.insert(key, PropertyValue::Json(property.value));
                }
            }
        }
        Some(NestedProperties::Undecodable(value)) => {
            properties.insert(prefix, PropertyValue::Json(value));
        }
    }
}

/// Counts of outcomes, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Events mapped to Mixpanel events.
    pub mapped: u64,
    /// Skipped events, indexed like [`SkipReason::ALL`].
    pub skipped: [u64; SkipReason::ALL.len()],
    /// Invalid events, indexed like [`currents_model::InvalidReason::ALL`].
    pub invalid: [u64; currents_model::InvalidReason::ALL.len()],
}

impl OutcomeCounts {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: &Outcome<'_>) {
        match outcome {
            Outcome::Mapped(_) => self.mapped += 1,
            Outcome::Skipped(reason) => self.skipped[*reason as usize] += 1,
            Outcome::Invalid(invalid) => self.record_invalid(invalid.reason),
        }
    }

    /// Counts one invalid event.
    pub fn record_invalid(&mut self, reason: currents_model::InvalidReason) {
        let idx = currents_model::InvalidReason::ALL
            .iter()
            .position(|candidate| *candidate == reason)
            .expect("ALL lists every reason");
        self.invalid[idx] += 1;
    }

    /// Adds the counts of `more` (another chunk's, another file's).
    pub fn add(&mut self, more: &OutcomeCounts) {
        self.mapped += more.mapped;
        for (count, more) in self.skipped.iter_mut().zip(more.skipped) {
            *count += more;
        }
        for (count, more) in self.invalid.iter_mut().zip(more.invalid) {
            *count += more;
        }
    }

    /// Every event counted.
    pub fn total(&self) -> u64 {
        self.mapped + self.total_skipped() + self.total_invalid()
    }

    /// Skipped events, all reasons.
    pub fn total_skipped(&self) -> u64 {
        self.skipped.iter().sum()
    }

    /// Invalid events, all reasons.
    pub fn total_invalid(&self) -> u64 {
        self.invalid.iter().sum()
    }

    /// Non-zero skip counts with their reasons.
    pub fn skipped_by_reason(&self) -> impl Iterator<Item = (SkipReason, u64)> + '_ {
        SkipReason::ALL
            .iter()
            .zip(self.skipped)
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| (*reason, count))
    }

    /// Non-zero invalid counts with their reasons.
    pub fn invalid_by_reason(
        &self,
    ) -> impl Iterator<Item = (currents_model::InvalidReason, u64)> + '_ {
        currents_model::InvalidReason::ALL
            .iter()
            .zip(self.invalid)
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| (*reason, count))
    }
}

#[cfg(test)]
mod tests;
