//! One Currents event: its parsed form and the parser that accepts both the
//! HTTP connector shape and the storage (Avro) shape.
//!
//! The parser borrows from the input: keys and strings without escapes are
//! slices of it, and property values stay unparsed JSON text
//! ([`RawValue`]) until someone needs them. Only the fields every consumer
//! needs (`event_type`, `id`, `time`, the user ids) are interpreted.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::json::{CowStr, PropertyList, Scalar, borrow_raw, parse_owned_object};
use crate::scan::{MAX_EVENT_DEPTH, Scanner};
use crate::{EventType, FieldLocation, InvalidEvent, InvalidReason};

/// An event's type: one of the known [`EventType`]s, or a name this version
/// does not know yet (Braze adds types without notice; they are kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventTypeName<'a> {
    /// A type in Braze's published tables.
    Known(EventType),
    /// Any other type name, kept as written.
    Other(Cow<'a, str>),
}

impl EventTypeName<'_> {
    /// Classifies a type name.
    pub fn parse(name: Cow<'_, str>) -> EventTypeName<'_> {
        match EventType::from_name(&name) {
            Some(known) => EventTypeName::Known(known),
            None => EventTypeName::Other(name),
        }
    }

    /// The name as Braze wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            EventTypeName::Known(known) => known.name(),
            EventTypeName::Other(name) => name,
        }
    }

    /// The known type, if it is one.
    pub fn known(&self) -> Option<EventType> {
        match self {
            EventTypeName::Known(known) => Some(*known),
            EventTypeName::Other(_) => None,
        }
    }
}

impl fmt::Display for EventTypeName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key with its JSON value left as text.
#[derive(Debug, Clone)]
pub struct Property<'a> {
    /// The key, unescaped.
    pub key: Cow<'a, str>,
    /// The value, as valid JSON text (`"text"`, `12`, `{"a":[1]}`, `null`).
    pub value: Cow<'a, RawValue>,
}

impl Property<'_> {
    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.value.get() == "null"
    }
}

/// The `user` part of an event (top-level fields in the storage shape).
#[derive(Debug, Clone, Default)]
pub struct User<'a> {
    /// Braze's own user id.
    pub user_id: Option<Cow<'a, str>>,
    /// The customer's id for the user; absent for anonymous users.
    pub external_user_id: Option<Cow<'a, str>>,
    /// The device the event happened on.
    pub device_id: Option<Cow<'a, str>>,
    /// The user's IANA time zone.
    pub timezone: Option<Cow<'a, str>>,
    /// Fields of `user` this version does not know, kept as they are.
    pub extra: Vec<Property<'a>>,
}

/// Custom or purchase properties: an object, or whatever arrived instead.
#[derive(Debug, Clone)]
pub enum NestedProperties<'a> {
    /// A JSON object (from an object, or from a JSON-encoded string).
    Object(Vec<Property<'a>>),
    /// A value that is not an object and does not decode to one: a string
    /// that is not JSON, a number, an array. Kept whole.
    Undecodable(Cow<'a, RawValue>),
}

/// Which wire shape an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Custom HTTP connector: `user{}` and `properties{}` objects.
    Http,
    /// Storage (Avro) export: flat fields; custom and purchase properties as
    /// a JSON-encoded string in `properties`.
    Storage,
}

/// One Currents event, in one logical form whatever its wire shape.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The event's type.
    pub event_type: EventTypeName<'a>,
    /// Braze's globally unique event id, the deduplication key.
    pub id: Cow<'a, str>,
    /// When the event happened, UNIX seconds (UTC).
    pub time: i64,
    /// Who it happened to.
    pub user: User<'a>,
    /// The event's other fields, in input order, values unparsed. Excludes
    /// the custom and purchase properties, which are in their own fields.
    pub properties: Vec<Property<'a>>,
    /// A custom event's name (`users.behaviors.CustomEvent` only; taken out
    /// of the properties, where Braze puts it).
    pub custom_event_name: Option<Cow<'a, str>>,
    /// A custom event's own properties.
    pub custom_properties: Option<NestedProperties<'a>>,
    /// A purchase's own properties.
    pub purchase_properties: Option<NestedProperties<'a>>,
    /// Unknown top-level fields of an HTTP-shaped event, kept as they are.
    pub extra: Vec<Property<'a>>,
    /// The wire shape it arrived in.
    pub shape: Shape,
}

impl<'a> Event<'a> {
    /// Parses one event from JSON text, borrowing from it.
    ///
    /// Accepts the HTTP connector shape and the storage shape. Returns why
    /// the event is invalid when it is not a JSON object or lacks a string
    /// `event_type`, a non-empty string `id` or an integer `time`, or when
    /// `user`, `properties` or a user id field has the wrong JSON type.
    pub fn parse(text: &'a str) -> Result<Event<'a>, InvalidEvent> {
        let mut scanner = Scanner::new(text);
        if let Some(raw) = RawEvent::scan(&mut scanner)
            && scanner.peek().is_none()
        {
            return raw.validate();
        }
        Event::parse_with_serde(text)
    }

    /// [`Event::parse`] by serde_json alone: the path for whatever the fast
    /// scanner leaves to it, and the reference it is tested against.
    pub(crate) fn parse_with_serde(text: &'a str) -> Result<Event<'a>, InvalidEvent> {
        let first_byte = text.trim_start().as_bytes().first().copied();
        if first_byte != Some(b'{') {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => {
                    InvalidEvent::new(InvalidReason::NotAnObject, "event is not a JSON object")
                }
                Err(error) => InvalidEvent::new(InvalidReason::InvalidJson, error.to_string()),
            });
        }
        let raw: RawEvent<'a> = serde_json::from_str(text)
            .map_err(|error| InvalidEvent::new(InvalidReason::InvalidJson, error.to_string()))?;
        raw.validate()
    }

    /// Parses one event from an already validated JSON value, e.g. an
    /// element of a [`crate::Batch`].
    pub fn from_raw(raw: &'a RawValue) -> Result<Event<'a>, InvalidEvent> {
        Event::parse(raw.get())
    }

    /// The external user id, if the event has one.
    pub fn external_user_id(&self) -> Option<&str> {
        self.user.external_user_id.as_deref()
    }
}

/// What the visitor collects before the event is checked.
#[derive(Default)]
pub(crate) struct RawEvent<'a> {
    event_type: Option<Scalar<'a>>,
    id: Option<Scalar<'a>>,
    time: Option<Scalar<'a>>,
    user: Option<UserField<'a>>,
    properties: Option<PropertiesField<'a>>,
    rest: Vec<Property<'a>>,
}

enum UserField<'a> {
    Object(RawUser<'a>),
    Null,
    Other(&'static str),
}

#[derive(Default)]
struct RawUser<'a> {
    user_id: Option<Scalar<'a>>,
    external_user_id: Option<Scalar<'a>>,
    device_id: Option<Scalar<'a>>,
    timezone: Option<Scalar<'a>>,
    extra: Vec<Property<'a>>,
}

enum PropertiesField<'a> {
    Object {
        list: Vec<Property<'a>>,
        custom: Option<&'a RawValue>,
        purchase: Option<&'a RawValue>,
    },
    /// The storage shape's JSON-encoded custom or purchase properties.
    Encoded(Cow<'a, str>),
    Null,
    Other(&'static str),
}

impl<'a> RawEvent<'a> {
    fn validate(self) -> Result<Event<'a>, InvalidEvent> {
        let event_type = match self.event_type {
            Some(Scalar::Str(name)) if !name.is_empty() => EventTypeName::parse(name),
            Some(Scalar::Str(_)) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidEventType,
                    "event_type must be a non-empty string, found an empty string",
                ));
            }
            None | Some(Scalar::Null) => {
                return Err(InvalidEvent::new(
                    InvalidReason::MissingEventType,
                    "event has no event_type",
                ));
            }
            Some(other) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidEventType,
                    format!("event_type must be a string, found {}", other.kind()),
                ));
            }
        };
        let id = match self.id {
            Some(Scalar::Str(id)) if !id.is_empty() => id,
            Some(Scalar::Str(_)) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidId,
                    "id must be a non-empty string, found an empty string",
                ));
            }
            None | Some(Scalar::Null) => {
                return Err(InvalidEvent::new(
                    InvalidReason::MissingId,
                    "event has no id",
                ));
            }
            Some(other) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidId,
                    format!("id must be a string, found {}", other.kind()),
                ));
            }
        };
        let time = match self.time {
            Some(Scalar::Int(time)) => time,
            None | Some(Scalar::Null) => {
                return Err(InvalidEvent::new(
                    InvalidReason::MissingTime,
                    "event has no time",
                ));
            }
            Some(other) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidTime,
                    format!(
                        "time must be an integer of UNIX seconds, found {}",
                        other.kind()
                    ),
                ));
            }
        };

        let is_http = matches!(self.user, Some(UserField::Object(_)))
            || matches!(self.properties, Some(PropertiesField::Object { .. }));
        let mut event = Event {
            event_type,
            id,
            time,
            user: User::default(),
            properties: Vec::new(),
            custom_event_name: None,
            custom_properties: None,
            purchase_properties: None,
            extra: Vec::new(),
            shape: if is_http { Shape::Http } else { Shape::Storage },
        };

        match self.user {
            None | Some(UserField::Null) => {}
            Some(UserField::Object(raw_user)) => event.user = raw_user.validate()?,
            Some(UserField::Other(kind)) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidUser,
                    format!("user must be an object, found {kind}"),
                ));
            }
        }

        if is_http {
            event.extra = self.rest;
        } else {
            // The flat fields become the properties, less the user's: the
            // list is kept, not copied.
            let mut properties = self.rest;
            let mut invalid = None;
            properties.retain(|property| {
                let field = match property.key.as_ref() {
                    "user_id" => &mut event.user.user_id,
                    "external_user_id" => &mut event.user.external_user_id,
                    "device_id" => &mut event.user.device_id,
                    "timezone" => &mut event.user.timezone,
                    _ => return true,
                };
                match user_string(&property.key, &property.value) {
                    Ok(value) => *field = value,
                    Err(error) => {
                        invalid.get_or_insert(error);
                    }
                }
                false
            });
            if let Some(error) = invalid {
                return Err(error);
            }
            event.properties = properties;
        }

        match self.properties {
            None | Some(PropertiesField::Null) => {}
            Some(PropertiesField::Object {
                list,
                custom,
                purchase,
            }) => {
                if event.properties.is_empty() {
                    event.properties = list;
                } else {
                    event.properties.extend(list);
                }
                event.custom_properties = custom.and_then(nested_from_raw);
                event.purchase_properties = purchase.and_then(nested_from_raw);
            }
            Some(PropertiesField::Encoded(text)) => {
                let location = event
                    .event_type
                    .known()
                    .and_then(|known| known.field("properties"))
                    .map(|field| field.location);
                match location {
                    Some(FieldLocation::CustomProperties) => {
                        event.custom_properties = nested_from_encoded(text)
                    }
                    Some(FieldLocation::PurchaseProperties) => {
                        event.purchase_properties = nested_from_encoded(text)
                    }
                    _ => event.properties.push(Property {
                        key: Cow::Borrowed("properties"),
                        value: Cow::Owned(json_string(&text)),
                    }),
                }
            }
            Some(PropertiesField::Other(kind)) => {
                return Err(InvalidEvent::new(
                    InvalidReason::InvalidProperties,
                    format!("properties must be an object, found {kind}"),
                ));
            }
        }
        if event.event_type == EventTypeName::Known(EventType::BehaviorsCustomEvent) {
            event.custom_event_name = Some(take_custom_event_name(&mut event.properties)?);
        }
        Ok(event)
    }
}

/// Removes every `name` property and returns the last one, which must be a
/// non-empty string: a custom event is identified by its name.
fn take_custom_event_name<'a>(
    properties: &mut Vec<Property<'a>>,
) -> Result<Cow<'a, str>, InvalidEvent> {
    let mut name = None;
    properties.retain(|property| {
        let is_name = property.key == "name";
        if is_name {
            name = Some(property.value.clone());
        }
        !is_name
    });
    let scalar = name
        .and_then(|raw| Scalar::from_cow(&raw).ok())
        .unwrap_or(Scalar::Null);
    match scalar {
        Scalar::Str(text) if !text.is_empty() => Ok(text),
        Scalar::Str(_) => Err(InvalidEvent::new(
            InvalidReason::MissingCustomEventName,
            "a custom event's name must not be empty",
        )),
        Scalar::Null => Err(InvalidEvent::new(
            InvalidReason::MissingCustomEventName,
            "a custom event needs a name",
        )),
        other => Err(InvalidEvent::new(
            InvalidReason::MissingCustomEventName,
            format!(
                "a custom event's name must be a string, found {}",
                other.kind()
            ),
        )),
    }
}

impl<'a> RawUser<'a> {
    fn validate(self) -> Result<User<'a>, InvalidEvent> {
        Ok(User {
            user_id: user_scalar("user_id", self.user_id)?,
            external_user_id: user_scalar("external_user_id", self.external_user_id)?,
            device_id: user_scalar("device_id", self.device_id)?,
            timezone: user_scalar("timezone", self.timezone)?,
            extra: self.extra,
        })
    }
}

fn user_scalar<'a>(
    field: &str,
    value: Option<Scalar<'a>>,
) -> Result<Option<Cow<'a, str>>, InvalidEvent> {
    match value {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(text)) => Ok(Some(text)),
        Some(other) => Err(InvalidEvent::new(
            InvalidReason::InvalidUser,
            format!("{field} must be a string or null, found {}", other.kind()),
        )),
    }
}

fn user_string<'a>(
    field: &str,
    value: &Cow<'a, RawValue>,
) -> Result<Option<Cow<'a, str>>, InvalidEvent> {
    let scalar = Scalar::from_cow(value);
    let scalar =
        scalar.map_err(|error| InvalidEvent::new(InvalidReason::InvalidJson, error.to_string()))?;
    user_scalar(field, Some(scalar))
}

/// Interprets `custom_properties` / `purchase_properties` as they arrived.
fn nested_from_raw(raw: &RawValue) -> Option<NestedProperties<'_>> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => match scan_object(text) {
            Some(list) => Some(NestedProperties::Object(list)),
            None => match serde_json::from_str::<PropertyList<'_>>(text) {
                Ok(PropertyList(list)) => Some(NestedProperties::Object(list)),
                Err(_) => Some(NestedProperties::Undecodable(Cow::Borrowed(raw))),
            },
        },
        Some(b'"') => match serde_json::from_str::<CowStr<'_>>(text) {
            Ok(CowStr(encoded)) => nested_from_encoded(encoded),
            Err(_) => Some(NestedProperties::Undecodable(Cow::Borrowed(raw))),
        },
        Some(b'n') => None,
        _ => Some(NestedProperties::Undecodable(Cow::Borrowed(raw))),
    }
}

/// Decodes a JSON-encoded object string; keeps the string whole when it is not one.
fn nested_from_encoded<'a>(encoded: Cow<'_, str>) -> Option<NestedProperties<'a>> {
    if encoded.trim() == "null" {
        return None;
    }
    match parse_owned_object(&encoded) {
        Some(list) => Some(NestedProperties::Object(list)),
        None => Some(NestedProperties::Undecodable(Cow::Owned(json_string(
            &encoded,
        )))),
    }
}

fn json_string(text: &str) -> Box<RawValue> {
    let encoded = serde_json::to_string(text).expect("a string always serializes");
    RawValue::from_string(encoded).expect("a serialized string is valid JSON")
}

/// Generates the `visit_*` methods that turn a non-object value into `Other(kind)`.
macro_rules! visit_non_object {
    ($value:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok(Self::Value::Other("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok(Self::Value::Other("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok(Self::Value::Other("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok(Self::Value::Other("a number"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok(Self::Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<$value, E> {
            Ok(Self::Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Self::Value::Other("an array"))
        }
    };
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = RawEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Currents event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut event = RawEvent::default();
                while let Some(CowStr(key)) = map.next_key()? {
                    match key.as_ref() {
                        "event_type" => event.event_type = Some(map.next_value()?),
                        "id" => event.id = Some(map.next_value()?),
                        "time" => event.time = Some(map.next_value()?),
                        "user" => event.user = Some(map.next_value()?),
                        "properties" => event.properties = Some(map.next_value()?),
                        _ => {
                            let value: &'de RawValue = map.next_value()?;
                            event.rest.push(Property {
                                key,
                                value: Cow::Borrowed(value),
                            });
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(EventVisitor)
    }
}

impl<'de> Deserialize<'de> for UserField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = UserField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user object")
            }
            visit_non_object!(UserField<'de>);
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(UserField::Other("a string"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut user = RawUser::default();
                while let Some(CowStr(key)) = map.next_key()? {
                    match key.as_ref() {
                        "user_id" => user.user_id = Some(map.next_value()?),
                        "external_user_id" => user.external_user_id = Some(map.next_value()?),
                        "device_id" => user.device_id = Some(map.next_value()?),
                        "timezone" => user.timezone = Some(map.next_value()?),
                        _ => {
                            let value: &'de RawValue = map.next_value()?;
                            user.extra.push(Property {
                                key,
                                value: Cow::Borrowed(value),
                            });
                        }
                    }
                }
                Ok(UserField::Object(user))
            }
        }
        deserializer.deserialize_any(UserVisitor)
    }
}

impl<'de> Deserialize<'de> for PropertiesField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropertiesVisitor;
        impl<'de> Visitor<'de> for PropertiesVisitor {
            type Value = PropertiesField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a properties object or a JSON-encoded string")
            }
            visit_non_object!(PropertiesField<'de>);
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(PropertiesField::Encoded(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(PropertiesField::Encoded(Cow::Owned(value.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(map.size_hint().unwrap_or(16));
                let mut custom = None;
                let mut purchase = None;
                while let Some(CowStr(key)) = map.next_key()? {
                    match key.as_ref() {
                        "custom_properties" => custom = Some(map.next_value()?),
                        "purchase_properties" => purchase = Some(map.next_value()?),
                        _ => {
                            let value: &'de RawValue = map.next_value()?;
                            list.push(Property {
                                key,
                                value: Cow::Borrowed(value),
                            });
                        }
                    }
                }
                Ok(PropertiesField::Object {
                    list,
                    custom,
                    purchase,
                })
            }
        }
        deserializer.deserialize_any(PropertiesVisitor)
    }
}

// The fast path: the same `RawEvent` as the serde visitors above build, read
// with `Scanner`. Each function mirrors its visitor; `None` means "let
// serde_json read this event", never "invalid".

/// Levels a value directly in the event may still nest.
const EVENT_MEMBER_DEPTH: usize = MAX_EVENT_DEPTH - 1;
/// Levels a value in `user` or `properties` may still nest.
const NESTED_MEMBER_DEPTH: usize = MAX_EVENT_DEPTH - 2;

impl<'a> RawEvent<'a> {
    /// Reads one event object at the scanner's position.
    pub(crate) fn scan_event(scanner: &mut Scanner<'a>) -> Option<Result<Event<'a>, InvalidEvent>> {
        RawEvent::scan(scanner).map(RawEvent::validate)
    }

    fn scan(scanner: &mut Scanner<'a>) -> Option<RawEvent<'a>> {
        let mut event = RawEvent::default();
        let mut more = scanner.open_object()?;
        while more {
            match scanner.key()? {
                "event_type" => event.event_type = Some(scan_scalar(scanner, EVENT_MEMBER_DEPTH)?),
                "id" => event.id = Some(scan_scalar(scanner, EVENT_MEMBER_DEPTH)?),
                "time" => event.time = Some(scan_scalar(scanner, EVENT_MEMBER_DEPTH)?),
                "user" => event.user = Some(scan_user(scanner)?),
                "properties" => event.properties = Some(scan_properties(scanner)?),
                key => {
                    if event.rest.capacity() == 0 {
                        // Room for a storage-shaped event's flat fields at once.
                        event.rest.reserve(16);
                    }
                    event
                        .rest
                        .push(scan_property(scanner, key, EVENT_MEMBER_DEPTH)?)
                }
            }
            more = scanner.next_member()?;
        }
        Some(event)
    }
}

/// A whole JSON object as a list of properties, as `PropertyList` reads it.
pub(crate) fn scan_object(text: &str) -> Option<Vec<Property<'_>>> {
    let mut scanner = Scanner::new(text);
    let mut list = Vec::with_capacity(8);
    let mut more = scanner.open_object()?;
    while more {
        let key = scanner.key()?;
        list.push(scan_property(&mut scanner, key, EVENT_MEMBER_DEPTH)?);
        more = scanner.next_member()?;
    }
    scanner.peek().is_none().then_some(list)
}

fn scan_property<'a>(
    scanner: &mut Scanner<'a>,
    key: &'a str,
    depth: usize,
) -> Option<Property<'a>> {
    let raw = scanner.raw_value(depth)?;
    Some(Property {
        key: Cow::Borrowed(key),
        value: Cow::Borrowed(borrow_raw(raw)),
    })
}

/// What a value that is not an object is, in the visitors' words; `None`
/// for `null`.
fn non_object_kind(first_byte: u8) -> Option<&'static str> {
    match first_byte {
        b'"' => Some("a string"),
        b't' | b'f' => Some("a boolean"),
        b'[' => Some("an array"),
        b'n' => None,
        _ => Some("a number"),
    }
}

fn scan_scalar<'a>(scanner: &mut Scanner<'a>, depth: usize) -> Option<Scalar<'a>> {
    let first_byte = scanner.peek()?;
    if first_byte == b'"' {
        let (raw, content, escaped) = scanner.raw_string()?;
        return if escaped {
            serde_json::from_str(raw).ok()
        } else {
            Some(Scalar::Str(Cow::Borrowed(content)))
        };
    }
    let raw = scanner.raw_value(depth)?;
    Some(match first_byte {
        b'0'..=b'9' if raw.len() <= 18 && raw.bytes().all(|byte| byte.is_ascii_digit()) => {
            Scalar::Int(raw.parse().ok()?)
        }
        // Negative numbers (`-0` is a float to serde_json), long ones and
        // fractions: serde_json says what they are.
        b'-' | b'0'..=b'9' => serde_json::from_str(raw).ok()?,
        b't' | b'f' => Scalar::Bool,
        b'n' => Scalar::Null,
        b'[' => Scalar::Array,
        _ => Scalar::Object,
    })
}

fn scan_user<'a>(scanner: &mut Scanner<'a>) -> Option<UserField<'a>> {
    let first_byte = scanner.peek()?;
    if first_byte != b'{' {
        scanner.raw_value(EVENT_MEMBER_DEPTH)?;
        return Some(non_object_kind(first_byte).map_or(UserField::Null, UserField::Other));
    }
    let mut user = RawUser::default();
    let mut more = scanner.open_object()?;
    while more {
        match scanner.key()? {
            "user_id" => user.user_id = Some(scan_scalar(scanner, NESTED_MEMBER_DEPTH)?),
            "external_user_id" => {
                user.external_user_id = Some(scan_scalar(scanner, NESTED_MEMBER_DEPTH)?)
            }
            "device_id" => user.device_id = Some(scan_scalar(scanner, NESTED_MEMBER_DEPTH)?),
            "timezone" => user.timezone = Some(scan_scalar(scanner, NESTED_MEMBER_DEPTH)?),
            key => user
                .extra
                .push(scan_property(scanner, key, NESTED_MEMBER_DEPTH)?),
        }
        more = scanner.next_member()?;
    }
    Some(UserField::Object(user))
}

fn scan_properties<'a>(scanner: &mut Scanner<'a>) -> Option<PropertiesField<'a>> {
    let first_byte = scanner.peek()?;
    match first_byte {
        b'{' => {}
        b'"' => {
            let (raw, content, escaped) = scanner.raw_string()?;
            let encoded = if escaped {
                Cow::Owned(serde_json::from_str::<String>(raw).ok()?)
            } else {
                Cow::Borrowed(content)
            };
            return Some(PropertiesField::Encoded(encoded));
        }
        _ => {
            scanner.raw_value(EVENT_MEMBER_DEPTH)?;
            return Some(
                non_object_kind(first_byte).map_or(PropertiesField::Null, PropertiesField::Other),
            );
        }
    }
    let mut list = Vec::with_capacity(32);
    let mut custom = None;
    let mut purchase = None;
    let mut more = scanner.open_object()?;
    while more {
        match scanner.key()? {
            "custom_properties" => {
                custom = Some(borrow_raw(scanner.raw_value(NESTED_MEMBER_DEPTH)?))
            }
            "purchase_properties" => {
                purchase = Some(borrow_raw(scanner.raw_value(NESTED_MEMBER_DEPTH)?))
            }
            key => list.push(scan_property(scanner, key, NESTED_MEMBER_DEPTH)?),
        }
        more = scanner.next_member()?;
    }
    Some(PropertiesField::Object {
        list,
        custom,
        purchase,
    })
}
