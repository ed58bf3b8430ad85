//! A Mixpanel event and its properties, serialized in one pass.
//!
//! Values can borrow their JSON text ([`PropertyValue::Json`]) so that a
//! pipeline that reads JSON and writes JSON copies nothing it does not change.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One Mixpanel event: a name and its properties.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event<'a> {
    /// The event's name, e.g. `Email Click`.
    pub name: Cow<'a, str>,
    /// Its properties, including the envelope (`distinct_id`, `time`,
    /// `$insert_id`, `token`).
    pub properties: Properties<'a>,
}

/// A property value: a string, an integer, or any JSON value as text.
#[derive(Debug, Clone)]
pub enum PropertyValue<'a> {
    /// A JSON string (unescaped here; escaped when serialized).
    String(Cow<'a, str>),
    /// A JSON integer.
    Integer(i64),
    /// Any JSON value, as valid JSON text, written out unchanged.
    Json(Cow<'a, RawValue>),
}

impl PartialEq for PropertyValue<'_> {
    /// Equal when they are the same JSON value, whatever their representation.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PropertyValue::String(a), PropertyValue::String(b)) => a == b,
            (PropertyValue::Integer(a), PropertyValue::Integer(b)) => a == b,
            _ => serde_json::to_value(self).ok() == serde_json::to_value(other).ok(),
        }
    }
}

/// An event's properties, in insertion order, each key at most once.
#[derive(Clone, Default)]
pub struct Properties<'a> {
    entries: Vec<(Cow<'a, str>, PropertyValue<'a>)>,
    /// One bit per key fingerprint, so that inserting a new key usually
    /// skips the scan for an existing one.
    fingerprints: u128,
}

impl<'a> Event<'a> {
    /// An event with a name and no properties.
    pub fn new(name: impl Into<Cow<'a, str>>) -> Event<'a> {
        Event {
            name: name.into(),
            properties: Properties::default(),
        }
    }

    /// Parses one event from JSON text, borrowing from it.
    pub fn from_json(text: &'a str) -> Result<Event<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The event as compact JSON, on one line.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// Appends the event as compact JSON to `out`, on one line even when a
    /// property's JSON text had line breaks.
    ///
    /// The same bytes as serializing with serde_json, written directly: this
    /// is the hot path of every pipeline that sends events, and most keys
    /// and values need no escaping, so they are copied whole.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(self.name.len() + 32 + 64 * self.properties.len());
        out.extend_from_slice(b"{\"event\":");
        write_json_str(out, &self.name);
        out.extend_from_slice(b",\"properties\":{");
        for (idx, (key, value)) in self.properties.entries.iter().enumerate() {
            if idx > 0 {
                out.push(b',');
            }
            write_json_str(out, key);
            out.push(b':');
            match value {
                PropertyValue::String(text) => write_json_str(out, text),
                PropertyValue::Integer(number) => {
                    serde_json::to_writer(&mut *out, number).expect("writing to a Vec cannot fail")
                }
                PropertyValue::Json(raw) => {
                    out.extend_from_slice(crate::ndjson::compact(raw.get()).as_bytes())
                }
            }
        }
        out.extend_from_slice(b"}}");
    }

    /// `properties.distinct_id`, when it is a string.
    pub fn distinct_id(&self) -> Option<&str> {
        self.properties.get_str("distinct_id")
    }

    /// `properties.$insert_id`, when it is a string.
    pub fn insert_id(&self) -> Option<&str> {
        self.properties.get_str("$insert_id")
    }

    /// `properties.time`, when it is an integer.
    pub fn time(&self) -> Option<i64> {
        match self.properties.get("time")? {
            PropertyValue::Integer(time) => Some(*time),
            PropertyValue::Json(raw) => raw.get().parse().ok(),
            PropertyValue::String(_) => None,
        }
    }
}

impl<'a> Properties<'a> {
    /// Empty properties with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Properties<'a> {
        Properties {
            entries: Vec::with_capacity(capacity),
            fingerprints: 0,
        }
    }

    /// Sets `key` to `value`. A key already present keeps its position and
    /// takes the new value, which is returned with the old one.
    pub fn insert(
        &mut self,
        key: impl Into<Cow<'a, str>>,
        value: PropertyValue<'a>,
    ) -> Option<PropertyValue<'a>> {
        let key = key.into();
        let bit = fingerprint(&key);
        if self.fingerprints & bit != 0
            && let Some(slot) = self
                .entries
                .iter_mut()
                .find(|(existing, _)| *existing == key)
        {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        self.fingerprints |= bit;
        self.entries.push((key, value));
        None
    }

    /// Removes `key`, returning its value if it was present.
    pub fn remove(&mut self, key: &str) -> Option<PropertyValue<'a>> {
        if self.fingerprints & fingerprint(key) == 0 {
            return None;
        }
        let idx = self
            .entries
            .iter()
            .position(|(existing, _)| existing == key)?;
        Some(self.entries.remove(idx).1)
    }

    /// Sets `key` to a value given as JSON text, after checking it is JSON.
    pub fn insert_json(
        &mut self,
        key: impl Into<Cow<'a, str>>,
        json: &str,
    ) -> Result<Option<PropertyValue<'a>>, serde_json::Error> {
        let raw = RawValue::from_string(json.trim().to_owned())?;
        Ok(self.insert(key, PropertyValue::Json(Cow::Owned(raw))))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&PropertyValue<'a>> {
        if self.fingerprints & fingerprint(key) == 0 {
            return None;
        }
        self.entries
            .iter()
            .find(|(existing, _)| existing == key)
            .map(|(_, value)| value)
    }

    /// The value of `key` when it is a string (a plain or a JSON string).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            PropertyValue::String(text) => Some(text),
            PropertyValue::Json(raw) => {
                let text = raw.get();
                // Only escape-free JSON strings can be returned as a slice.
                let inner = text.strip_prefix('"')?.strip_suffix('"')?;
                (!inner.contains('\\')).then_some(inner)
            }
            PropertyValue::Integer(_) => None,
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The properties in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PropertyValue<'a>)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_ref(), value))
    }
}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for Properties<'_> {
    /// Equal when they hold the same keys with the same values, in any order.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(key, value)| other.get(key).is_some_and(|theirs| theirs == value))
    }
}

/// Writes `text` as a JSON string: copied as is when nothing in it needs
/// escaping, escaped by serde_json otherwise.
#[inline]
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Whether a JSON string needs escapes: it holds `"`, `\` or a control
/// character. Eight bytes at a time, with the classic "has a byte below n"
/// bit trick, since nearly every string is clean and must be scanned whole.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Bytes below `0x20`, and bytes equal to `"` or `\` after an XOR.
    fn flags(word: u64) -> u64 {
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        (word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
    }
    let found = match bytes.len() {
        0 => 0,
        // Padded with spaces, which need no escape.
        len @ 1..8 => {
            let mut word = [b' '; 8];
            word[..len].copy_from_slice(bytes);
            flags(u64::from_ne_bytes(word))
        }
        len => {
            let mut found = 0;
            let mut chunks = bytes.chunks_exact(8);
            for chunk in &mut chunks {
                found |= flags(u64::from_ne_bytes(chunk.try_into().expect("8 bytes")));
            }
            if !chunks.remainder().is_empty() {
                // The last eight bytes, overlapping the last whole chunk.
                let tail = &bytes[len - 8..];
                found |= flags(u64::from_ne_bytes(tail.try_into().expect("8 bytes")));
            }
            found
        }
    };
    found & HIGH != 0
}

/// A cheap 1-of-128 hash of a key: its length and its first, middle and
/// last bytes. 128 bits keep false hits (which cost a scan) rare for the
/// 20 to 40 keys an event usually has.
fn fingerprint(key: &str) -> u128 {
    let bytes = key.as_bytes();
    let byte_at = |idx: usize| u64::from(bytes.get(idx).copied().unwrap_or(0));
    let len = bytes.len();
    let mixed = (len as u64)
        ^ (byte_at(0) << 8)
        ^ (byte_at(len / 2) << 16)
        ^ (byte_at(len.wrapping_sub(1)) << 24)
        ^ (byte_at(len.wrapping_sub(2)) << 32);
    1u128 << (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57)
}

impl<'a> From<&'a str> for PropertyValue<'a> {
    fn from(text: &'a str) -> Self {
        PropertyValue::String(Cow::Borrowed(text))
    }
}

impl From<String> for PropertyValue<'_> {
    fn from(text: String) -> Self {
        PropertyValue::String(Cow::Owned(text))
    }
}

impl From<i64> for PropertyValue<'_> {
    fn from(number: i64) -> Self {
        PropertyValue::Integer(number)
    }
}

impl Serialize for PropertyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PropertyValue::String(text) => serializer.serialize_str(text),
            PropertyValue::Integer(number) => serializer.serialize_i64(*number),
            PropertyValue::Json(raw) => match crate::ndjson::compact(raw.get()) {
                Cow::Borrowed(_) => raw.serialize(serializer),
                Cow::Owned(compacted) => RawValue::from_string(compacted)
                    .map_err(serde::ser::Error::custom)?
                    .serialize(serializer),
            },
        }
    }
}

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, value) in &self.entries {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("event", self.name.as_ref())?;
        map.serialize_entry("properties", &self.properties)?;
        map.end()
    }
}

/// A key that borrows from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(value.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Properties<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropertiesVisitor;
        impl<'de> Visitor<'de> for PropertiesVisitor {
            type Value = Properties<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a properties object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut properties = Properties::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    properties.insert(key, PropertyValue::Json(Cow::Borrowed(value)));
                }
                Ok(properties)
            }
        }
        deserializer.deserialize_map(PropertiesVisitor)
    }
}

impl<'de> Deserialize<'de> for Event<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = Event<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a Mixpanel event {"event": ..., "properties": {...}}"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name = None;
                let mut properties = None;
                while let Some(Key(key)) = map.next_key()? {
                    match key.as_ref() {
                        "event" => name = Some(map.next_value::<Key<'de>>()?.0),
                        "properties" => properties = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Event {
                    name: name.ok_or_else(|| de::Error::missing_field("event"))?,
                    properties: properties.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_map(EventVisitor)
    }
}

#[cfg(test)]
mod tests;
