//! Mixpanel's strict-mode answers (`strict=1`), shared by `/import` and
//! `/engage`: `failed_records`, each naming a record of the request by its
//! index, with Mixpanel's message.
//!
//! The spec types `index` as `number`, not `integer`, so an index written
//! `2.0` is read as 2. An index that names no record (non-integral,
//! negative, past the request) cannot be tied to a record: the whole
//! answer is then unreadable, never just that entry, because the record it
//! meant would otherwise be counted as accepted. `/import` splits the
//! batch to find the refused record; `/engage` reports
//! [`crate::Error::InvalidResponse`].

use serde::{Deserialize, Deserializer};

/// One entry of `failed_records`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawFailedRecord {
    #[serde(deserialize_with = "count")]
    pub(crate) index: usize,
    pub(crate) insert_id: Option<String>,
    #[serde(rename = "$insert_id")]
    pub(crate) dollar_insert_id: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) message: Option<String>,
}

/// A non-negative whole number, written as an integer or as an integral
/// float (`3`, `3.0`); anything else is an error.
pub(crate) fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    whole(&number).ok_or_else(|| {
        serde::de::Error::custom(format!("{number} is not a non-negative whole number"))
    })
}

/// [`count`] for an optional field (absent or `null` is `None`).
pub(crate) fn optional_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let number = Option::<serde_json::Number>::deserialize(deserializer)?;
    number
        .map(|number| {
            whole(&number).ok_or_else(|| {
                serde::de::Error::custom(format!("{number} is not a non-negative whole number"))
            })
        })
        .transpose()
}

fn whole(number: &serde_json::Number) -> Option<usize> {
    if let Some(integer) = number.as_u64() {
        return usize::try_from(integer).ok();
    }
    let float = number.as_f64()?;
    // Exact below 2^53, far past any index of a 2000-record request.
    let is_whole = float.is_finite() && float >= 0.0 && float.fract() == 0.0 && float < 9.0e15;
    is_whole.then_some(float as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Counted {
        #[serde(deserialize_with = "count")]
        n: usize,
        #[serde(default, deserialize_with = "optional_count")]
        m: Option<usize>,
    }

    fn read(json: &str) -> Option<(usize, Option<usize>)> {
        serde_json::from_str::<Counted>(json)
            .ok()
            .map(|counted| (counted.n, counted.m))
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats_but_nothing_else_is_a_count() {
        assert_eq!(read(r#"{"n":3}"#), Some((3, None)));
        assert_eq!(read(r#"{"n":0.0,"m":2.0}"#), Some((0, Some(2))));
        assert_eq!(read(r#"{"n":1e3,"m":null}"#), Some((1000, None)));
        for bad in [
            r#"{"n":1.5}"#,
            r#"{"n":-1}"#,
            r#"{"n":-0.5}"#,
            r#"{"n":"1"}"#,
            r#"{"n":null}"#,
            r#"{"n":1e300}"#,
            r#"{"n":1,"m":0.25}"#,
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}
