//! Small serde building blocks for borrowing JSON: keys that borrow when they
//! can, scalars whose type is checked after parsing, and property lists.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::Property;

/// The JSON text `json` as a [`RawValue`], without reading it again: `json`
/// must be one valid JSON value, as [`crate::scan::Scanner`] delimits them.
///
/// serde_json has no public way to borrow a `RawValue` without validating
/// it, which would scan every property a second time. Its `&RawValue`
/// deserializer takes the text from a one-entry map under serde_json's
/// marker key; that is what this does. Should a future serde_json read it
/// differently, the fallback validates the text instead: slower, still right
/// (and the test `borrowed_raw_values_take_the_fast_path` fails, to say so).
pub(crate) fn borrow_raw(json: &str) -> &RawValue {
    borrow_raw_by_marker(json)
        .or_else(|_| serde_json::from_str(json))
        .expect("the scanner only delimits valid JSON values")
}

/// The fast half of [`borrow_raw`].
pub(crate) fn borrow_raw_by_marker(json: &str) -> Result<&RawValue, serde::de::value::Error> {
    use serde::de::value::{BorrowedStrDeserializer, Error, MapDeserializer};
    const MARKER: &str = "$serde_json::private::RawValue";
    let entry = (MARKER, BorrowedStrDeserializer::<Error>::new(json));
    <&RawValue>::deserialize(MapDeserializer::<_, Error>::new(std::iter::once(entry)))
}

/// A string that borrows from the input unless it contained escapes.
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CowStrVisitor;
        impl<'de> Visitor<'de> for CowStrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(CowStrVisitor)
    }
}

/// Any JSON value, keeping strings and integers and only the kind of the rest,
/// so that a field's type can be checked (and reported) after parsing.
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// An integer outside `i64`, or a number with a fraction or exponent.
    OtherNumber,
    Bool,
    Null,
    Array,
    Object,
}

impl Scalar<'_> {
    /// Parses one JSON value held in a `Cow`, copying a string out only when
    /// the text itself is owned.
    pub(crate) fn from_cow<'a>(raw: &Cow<'a, RawValue>) -> Result<Scalar<'a>, serde_json::Error> {
        match *raw {
            Cow::Borrowed(raw) => serde_json::from_str(raw.get()),
            Cow::Owned(ref raw) => {
                serde_json::from_str::<Scalar<'_>>(raw.get()).map(Scalar::into_owned)
            }
        }
    }

    fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Str(text) => Scalar::Str(Cow::Owned(text.into_owned())),
            Scalar::Int(number) => Scalar::Int(number),
            Scalar::OtherNumber => Scalar::OtherNumber,
            Scalar::Bool => Scalar::Bool,
            Scalar::Null => Scalar::Null,
            Scalar::Array => Scalar::Array,
            Scalar::Object => Scalar::Object,
        }
    }

    /// The JSON kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::Int(_) => "an integer",
            Scalar::OtherNumber => "a non-integer number",
            Scalar::Bool => "a boolean",
            Scalar::Null => "null",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(value)))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(value.to_owned())))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(value)))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(value).map_or(Scalar::OtherNumber, Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::OtherNumber)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// Collects the remaining entries of a map as borrowed properties.
pub(crate) fn collect_properties<'de, A: MapAccess<'de>>(
    map: &mut A,
    out: &mut Vec<Property<'de>>,
) -> Result<(), A::Error> {
    while let Some(CowStr(key)) = map.next_key()? {
        let value: &'de RawValue = map.next_value()?;
        out.push(Property {
            key,
            value: Cow::Borrowed(value),
        });
    }
    Ok(())
}

/// A JSON object read as a list of properties, values left unparsed.
pub(crate) struct PropertyList<'a>(pub(crate) Vec<Property<'a>>);

impl<'de> Deserialize<'de> for PropertyList<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = PropertyList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut properties = Vec::with_capacity(map.size_hint().unwrap_or(8));
                collect_properties(&mut map, &mut properties)?;
                Ok(PropertyList(properties))
            }
        }
        deserializer.deserialize_map(ListVisitor)
    }
}

/// A JSON object parsed from an owned string (a JSON-encoded field), with
/// owned values since they cannot borrow from a temporary.
pub(crate) fn parse_owned_object(text: &str) -> Option<Vec<Property<'static>>> {
    let list: Vec<(String, Box<RawValue>)> = serde_json::from_str::<OwnedObject>(text).ok()?.0;
    Some(
        list.into_iter()
            .map(|(key, value)| Property {
                key: Cow::Owned(key),
                value: Cow::Owned(value),
            })
            .collect(),
    )
}

struct OwnedObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for OwnedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OwnedVisitor;
        impl<'de> Visitor<'de> for OwnedVisitor {
            type Value = OwnedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push((key, value));
                }
                Ok(OwnedObject(entries))
            }
        }
        deserializer.deserialize_map(OwnedVisitor)
    }
}
