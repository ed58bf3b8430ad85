//! Field schema types: what Braze's tables say about each field of an event type.
//!
//! The per-type data itself is generated into `generated.rs`; this module holds
//! the types it is made of and the lookups over it.

use crate::EventType;

/// A field's type in Braze's Avro (storage) schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AvroType {
    /// `string`
    String,
    /// `int` (32-bit)
    Int,
    /// `long` (64-bit)
    Long,
    /// `float`
    Float,
    /// `boolean`
    Boolean,
    /// `array<string>`
    StringArray,
}

/// Where a field sits in a Custom HTTP connector event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldLocation {
    /// At the top level: `id`, `time`.
    Top,
    /// In `user`: `user_id`, `external_user_id`, `device_id`, `timezone`.
    User,
    /// In `properties`.
    Properties,
    /// The custom event's properties: `properties.custom_properties` over
    /// HTTP, a JSON-encoded string field `properties` in storage.
    CustomProperties,
    /// The purchase's properties: `properties.purchase_properties` over HTTP,
    /// a JSON-encoded string field `properties` in storage.
    PurchaseProperties,
}

/// One field of one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// The field's name in the storage schema.
    pub name: &'static str,
    /// Its Avro type.
    pub avro_type: AvroType,
    /// Whether Braze marks it required (non-null).
    pub required: bool,
    /// Whether Braze marks it as personal data.
    pub pii: bool,
    /// Where it sits in an HTTP connector event.
    pub location: FieldLocation,
}

impl EventType {
    /// The field named `name` in this type's schema, if there is one.
    pub fn field(self, name: &str) -> Option<&'static FieldSpec> {
        let fields = self.fields();
        fields
            .binary_search_by(|field| field.name.cmp(name))
            .ok()
            .map(|idx| &fields[idx])
    }

    /// Whether `name` is a field of this type in Braze's schema.
    pub fn has_field(self, name: &str) -> bool {
        self.field(name).is_some()
    }
}
