//! Typed access: an event as the struct of its type.
//!
//! [`Event::typed`] turns an [`Event`] into a [`TypedEvent`], which has one
//! variant per event type in Braze's tables. Each holds a struct named like
//! the type's [`EventType`] variant ([`MessagesEmailClick`] for
//! `users.messages.email.Click`) with one public field per field of the type,
//! typed by its Avro type:
//!
//! | Avro type       | Rust type              | JSON accepted                 |
//! |-----------------|------------------------|-------------------------------|
//! | `string`        | `Cow<'a, str>`         | a string                      |
//! | `int`, `long`   | `i64`                  | an integer (no fraction)      |
//! | `float`         | `f64`                  | any number                    |
//! | `boolean`       | `bool`                 | `true` or `false`             |
//! | `array<string>` | `Vec<Cow<'a, str>>`    | an array of strings           |
//!
//! A field Braze marks required is a plain value, an optional one an
//! `Option`. Every struct starts with `id` and `time` and ends with `extra`.
//! The user id fields (`user_id`, `external_user_id`, `device_id`,
//! `timezone`) come from [`Event::user`]; a custom event's `name` from
//! [`Event::custom_event_name`]; its own properties (Braze's `properties`
//! field) are `custom_properties`, and a purchase's are
//! `purchase_properties`, both an `Option<NestedProperties>` as the event
//! carried them. Strings still borrow from the input when they have no
//! escapes. Both wire shapes give the same struct.
//!
//! The conversion reads the event's properties once, in order:
//!
//! - absent and `null` both mean "not set": an optional field is `None`, a
//!   required one is an error ([`TypedError::Missing`]);
//! - when a key appears twice the last value wins, so a trailing `null`
//!   unsets an earlier value;
//! - a value of the wrong JSON type is an error ([`TypedError::WrongType`]),
//!   even when a later value of the same key is right; the first such error
//!   is reported, before any missing field;
//! - keys the type does not declare are kept, in order, in the struct's
//!   `extra`, followed by the event's other unknown fields.
//!
//! An event of a type this version does not know becomes
//! [`TypedEvent::Other`], unchanged. The structs and [`TypedEvent`] are
//! `#[non_exhaustive]`: Braze adds types and fields, and regenerating them
//! must not break code that reads them.
//!
//! # Example
//!
//! ```
//! use currents_model::Event;
//! use currents_model::typed::TypedEvent;
//!
//! let event = Event::parse(r#"{
//!     "event_type": "users.behaviors.Purchase",
//!     "id": "9c2e7a10-4b1f-4d6e-8a3c-5f0d1e2b3c4d",
//!     "time": 1732792800,
//!     "user": {"user_id": "65f1c0ffee", "external_user_id": "cust-1042"},
//!     "properties": {"product_id": "sku-7", "price": 19.99, "currency": "EUR",
//!                    "purchase_properties": {"size": "M"}, "coupon": "WINTER"}
//! }"#)?;
//! match event.typed()? {
//!     TypedEvent::BehaviorsPurchase(purchase) => {
//!         assert_eq!(purchase.product_id, "sku-7");
//!         assert_eq!(purchase.price, 19.99);
//!         assert_eq!(purchase.external_user_id.as_deref(), Some("cust-1042"));
//!         assert_eq!(purchase.extra[0].key, "coupon");
//!     }
//!     other => panic!("expected a purchase, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Event, EventType};

pub use crate::typed_generated::*;

impl<'a> Event<'a> {
    /// Converts the event into the struct of its type (see [`crate::typed`]).
    ///
    /// Returns [`TypedEvent::Other`] with the event unchanged when its type
    /// is not one this version knows, and an error when a field the type
    /// requires is absent or `null`, or a field has the wrong JSON type.
    pub fn typed(self) -> Result<TypedEvent<'a>, TypedError> {
        TypedEvent::from_event(self)
    }
}

/// Why an event could not be converted into the struct of its type.
///
/// The `Display` form names the type and the field, e.g.
/// `users.messages.email.Click: field email_address must be a string, found a number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// A field the type requires is absent or `null`.
    #[error("{}: required field {field} is absent or null", .event_type.name())]
    Missing {
        /// The event's type.
        event_type: EventType,
        /// The field, as Braze names it.
        field: &'static str,
    },
    /// A field's JSON value does not fit its Avro type.
    #[error("{}: field {field} must be {expected}, found {found}", .event_type.name())]
    WrongType {
        /// The event's type.
        event_type: EventType,
        /// The field, as Braze names it.
        field: &'static str,
        /// What the field must be, e.g. `a string`, `an integer`.
        expected: &'static str,
        /// What it was, e.g. `a number`, `a non-integer number`.
        found: &'static str,
    },
}

impl TypedError {
    /// The type of the event that could not be converted.
    pub fn event_type(&self) -> EventType {
        match self {
            TypedError::Missing { event_type, .. } | TypedError::WrongType { event_type, .. } => {
                *event_type
            }
        }
    }

    /// The field at fault, as Braze names it.
    pub fn field(&self) -> &'static str {
        match self {
            TypedError::Missing { field, .. } | TypedError::WrongType { field, .. } => field,
        }
    }
}

/// The value decoders the generated conversion calls, one per Avro type.
///
/// [`decode::Fields`] reads each property into its field's slot: `None` for
/// `null`, the value when it has the right JSON type, and otherwise it keeps
/// the first [`TypedError`] for [`decode::Fields::finish`] to return. The
/// generated code thus has no early return per property, which keeps each
/// type's conversion small to compile. Strings borrow from the input when
/// the text is borrowed and has no escapes.
pub(crate) mod decode {
    use std::borrow::Cow;

    use serde_json::value::RawValue;

    use super::TypedError;
    use crate::json::CowStr;
    use crate::{EventType, NestedProperties, Property};

    /// What a value was instead of the expected JSON type, e.g. `a number`.
    type Found = &'static str;

    /// The conversion state of one event: its type and the first error.
    pub(crate) struct Fields {
        event_type: EventType,
        error: Option<TypedError>,
    }

    impl Fields {
        /// Starts converting an event of `event_type`.
        pub(crate) fn new(event_type: EventType) -> Fields {
            Fields {
                event_type,
                error: None,
            }
        }

        /// Stores a decoded value in its slot, or keeps the first error.
        fn store<T>(
            &mut self,
            slot: &mut Option<T>,
            field: &'static str,
            expected: &'static str,
            decoded: Result<Option<T>, Found>,
        ) {
            match decoded {
                Ok(value) => *slot = value,
                Err(found) => {
                    if self.error.is_none() {
                        self.error = Some(TypedError::WrongType {
                            event_type: self.event_type,
                            field,
                            expected,
                            found,
                        });
                    }
                }
            }
        }

        /// A `string` field.
        #[inline(never)]
        pub(crate) fn string<'a>(
            &mut self,
            slot: &mut Option<Cow<'a, str>>,
            field: &'static str,
            property: &Property<'a>,
        ) {
            self.store(slot, field, "a string", string(&property.value));
        }

        /// An `int` or `long` field: a JSON integer that fits `i64`.
        #[inline(never)]
        pub(crate) fn integer(
            &mut self,
            slot: &mut Option<i64>,
            field: &'static str,
            property: &Property<'_>,
        ) {
            self.store(slot, field, "an integer", integer(&property.value));
        }

        /// A `float` field: any JSON number.
        #[inline(never)]
        pub(crate) fn float(
            &mut self,
            slot: &mut Option<f64>,
            field: &'static str,
            property: &Property<'_>,
        ) {
            self.store(slot, field, "a number", float(&property.value));
        }

        /// A `boolean` field.
        #[inline(never)]
        pub(crate) fn boolean(
            &mut self,
            slot: &mut Option<bool>,
            field: &'static str,
            property: &Property<'_>,
        ) {
            self.store(slot, field, "a boolean", boolean(&property.value));
        }

        /// An `array<string>` field.
        #[inline(never)]
        pub(crate) fn string_array<'a>(
            &mut self,
            slot: &mut Option<Vec<Cow<'a, str>>>,
            field: &'static str,
            property: &Property<'a>,
        ) {
            self.store(
                slot,
                field,
                "an array of strings",
                string_array(&property.value),
            );
        }

        /// The first wrong-type error, if any.
        pub(crate) fn finish(&mut self) -> Result<(), TypedError> {
            match self.error.take() {
                Some(error) => Err(error),
                None => Ok(()),
            }
        }

        /// A required field's value, or [`TypedError::Missing`] when it is
        /// absent or `null`.
        pub(crate) fn required<T>(
            &self,
            field: &'static str,
            value: Option<T>,
        ) -> Result<T, TypedError> {
            match value {
                Some(value) => Ok(value),
                None => Err(TypedError::Missing {
                    event_type: self.event_type,
                    field,
                }),
            }
        }
    }

    /// A JSON value's kind, from its first byte (the text is valid JSON).
    fn kind(text: &str) -> Found {
        match text.as_bytes().first() {
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(b'[') => "an array",
            Some(b'{') => "an object",
            _ => "a number",
        }
    }

    /// The value's text, or `None` for `null`. A [`RawValue`]'s text is one
    /// valid JSON value without surrounding whitespace.
    fn text(value: &RawValue) -> Option<&str> {
        let text = value.get();
        (text != "null").then_some(text)
    }

    /// Takes the `Cow` (not a `&RawValue`): only a borrowed value's strings
    /// may borrow for `'a`.
    fn string<'a>(value: &Cow<'a, RawValue>) -> Result<Option<Cow<'a, str>>, Found> {
        let parsed = match *value {
            Cow::Borrowed(raw) => string_text(raw.get())?,
            Cow::Owned(ref raw) => {
                string_text(raw.get())?.map(|text| Cow::Owned(text.into_owned()))
            }
        };
        Ok(parsed)
    }

    /// A JSON string's value, borrowed from `text` when it has no escapes.
    fn string_text(text: &str) -> Result<Option<Cow<'_, str>>, Found> {
        match kind(text) {
            "null" => Ok(None),
            "a string" => {
                // Valid JSON text: without a backslash, the value is exactly
                // what lies between the quotes. (A fold without early exit,
                // which the compiler vectorises: the strings are short.)
                let inner = &text[1..text.len() - 1];
                let has_escape = inner
                    .bytes()
                    .fold(false, |seen, byte| seen | (byte == b'\\'));
                if !has_escape {
                    return Ok(Some(Cow::Borrowed(inner)));
                }
                match serde_json::from_str::<CowStr<'_>>(text) {
                    Ok(CowStr(value)) => Ok(Some(value)),
                    Err(_) => Err("a string with an invalid escape"),
                }
            }
            other => Err(other),
        }
    }

    // Numbers are valid JSON text here, which `str::parse` reads exactly
    // (JSON has no `+`, leading zeros, `inf` or `NaN` for it to differ on).

    fn integer(value: &RawValue) -> Result<Option<i64>, Found> {
        let Some(text) = text(value) else {
            return Ok(None);
        };
        let found = kind(text);
        if found != "a number" {
            return Err(found);
        }
        match text.parse::<i64>() {
            Ok(number) => Ok(Some(number)),
            Err(_) if text.contains(['.', 'e', 'E']) => Err("a non-integer number"),
            Err(_) => Err("an integer out of range"),
        }
    }

    fn float(value: &RawValue) -> Result<Option<f64>, Found> {
        let Some(text) = text(value) else {
            return Ok(None);
        };
        let found = kind(text);
        if found != "a number" {
            return Err(found);
        }
        match text.parse::<f64>() {
            Ok(number) if number.is_finite() => Ok(Some(number)),
            _ => Err("a number out of range"),
        }
    }

    fn boolean(value: &RawValue) -> Result<Option<bool>, Found> {
        match text(value) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(kind(other)),
        }
    }

    /// Takes the `Cow`, like [`string`].
    fn string_array<'a>(value: &Cow<'a, RawValue>) -> Result<Option<Vec<Cow<'a, str>>>, Found> {
        let parsed = match *value {
            Cow::Borrowed(raw) => string_array_text(raw.get())?,
            Cow::Owned(ref raw) => string_array_text(raw.get())?.map(|items| {
                items
                    .into_iter()
                    .map(|item| Cow::Owned(item.into_owned()))
                    .collect()
            }),
        };
        Ok(parsed)
    }

    /// A JSON array of strings, borrowed from `text` where they have no escapes.
    fn string_array_text(text: &str) -> Result<Option<Vec<Cow<'_, str>>>, Found> {
        match kind(text) {
            "null" => Ok(None),
            "an array" => match serde_json::from_str::<Vec<CowStr<'_>>>(text) {
                Ok(items) => Ok(Some(items.into_iter().map(|CowStr(item)| item).collect())),
                Err(_) => Err("an array with an element that is not a string"),
            },
            other => Err(other),
        }
    }

    /// Keeps a string the event carries but the type does not declare (a
    /// user id field, a custom event name) as an `extra` property.
    #[inline(never)]
    pub(crate) fn leftover_str<'a>(
        extra: &mut Vec<Property<'a>>,
        key: &'static str,
        value: Option<Cow<'a, str>>,
    ) {
        if let Some(text) = value {
            let json =
                serde_json::value::to_raw_value(text.as_ref()).expect("a string always serializes");
            extra.push(Property {
                key: Cow::Borrowed(key),
                value: Cow::Owned(json),
            });
        }
    }

    /// Keeps custom or purchase properties the type does not declare as an
    /// `extra` property holding them as a JSON object (or as they arrived,
    /// when they were not one).
    #[inline(never)]
    pub(crate) fn leftover_nested<'a>(
        extra: &mut Vec<Property<'a>>,
        key: &'static str,
        value: Option<NestedProperties<'a>>,
    ) {
        let value = match value {
            None => return,
            Some(NestedProperties::Undecodable(raw)) => raw,
            Some(NestedProperties::Object(list)) => {
                let mut json = String::from("{");
                for (idx, property) in list.iter().enumerate() {
                    if idx > 0 {
                        json.push(',');
                    }
                    json.push_str(
                        &serde_json::to_string(property.key.as_ref())
                            .expect("a string always serializes"),
                    );
                    json.push(':');
                    json.push_str(property.value.get());
                }
                json.push('}');
                Cow::Owned(
                    RawValue::from_string(json).expect("an object of JSON values is valid JSON"),
                )
            }
        };
        extra.push(Property {
            key: Cow::Borrowed(key),
            value,
        });
    }
}

#[cfg(test)]
mod tests;
