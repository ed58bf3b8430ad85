//! Export rules: which Mixpanel name and which properties each type gets.
//!
//! The per-type data is generated from `currents-to-mixpanel.tsv` into
//! `generated.rs`; this module holds its types and the lookups.

use currents_model::{EventType, EventTypeName};

use super::generated::{LEGACY_RULES, rule_for};

/// A type's Mixpanel event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExportName {
    /// Braze's Mixpanel export does not send this type.
    NotExported,
    /// The Mixpanel name; for custom events, the prefix of the name.
    Named(&'static str),
}

/// Which properties a type exports besides the new fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PropertyList {
    /// No published list: every property passes.
    All,
    /// These output keys (after renames), sorted.
    Only(&'static [&'static str]),
}

/// One row of the mapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExportRule {
    pub(super) name: ExportName,
    pub(super) properties: PropertyList,
}

impl PropertyList {
    pub(super) fn contains(self, key: &str) -> bool {
        match self {
            PropertyList::All => true,
            PropertyList::Only(keys) => keys.binary_search(&key).is_ok(),
        }
    }
}

/// The rule for a type, or `None` for a type the tables do not know.
pub(super) fn lookup(event_type: &EventTypeName<'_>) -> Option<ExportRule> {
    match event_type {
        EventTypeName::Known(known) => Some(rule_for(*known)),
        EventTypeName::Other(name) => LEGACY_RULES
            .iter()
            .find(|(legacy_name, _)| legacy_name == name)
            .map(|(_, rule)| *rule),
    }
}

/// The rule for a type in the field tables.
pub(super) fn lookup_known(event_type: EventType) -> ExportRule {
    rule_for(event_type)
}

/// Every name in the mapping table, known types first.
pub(super) fn all_type_names() -> impl Iterator<Item = &'static str> {
    EventType::ALL
        .iter()
        .map(|event_type| event_type.name())
        .chain(LEGACY_RULES.iter().map(|(name, _)| *name))
}
