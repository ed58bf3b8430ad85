//! The JSON writers against serde_json: the same text for every string,
//! integer and float.

use proptest::prelude::*;

use super::{push_f32, push_f64, push_i64, push_latin1, push_str};

fn written(write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    write(&mut out);
    String::from_utf8(out).expect("the writers keep UTF-8 valid")
}

#[test]
fn strings_are_escaped_as_serde_json_escapes_them() {
    for text in [
        "",
        "plain",
        "quote \" backslash \\ slash /",
        "controls \u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f}\u{7f}",
        "Müller 東京 🎉 \u{2028}",
    ] {
        let expected = serde_json::to_string(text).unwrap();
        assert_eq!(
            written(|out| push_str(out, text.as_bytes())),
            expected,
            "{text:?}"
        );
    }
}

#[test]
fn numbers_are_written_as_serde_json_writes_them() {
    for value in [0, 1, -1, 42, i64::MAX, i64::MIN, 1_732_792_800] {
        assert_eq!(written(|out| push_i64(out, value)), value.to_string());
    }
    assert_eq!(written(|out| push_f64(out, 10.0)), "10.0");
    assert_eq!(written(|out| push_f64(out, -0.5)), "-0.5");
    assert_eq!(written(|out| push_f32(out, 0.1)), "0.1");
    assert_eq!(written(|out| push_f32(out, 48.856_613)), "48.856613");
    assert_eq!(written(|out| push_f64(out, f64::NAN)), "null");
    assert_eq!(written(|out| push_f32(out, f32::INFINITY)), "null");
    assert_eq!(
        written(|out| push_f64(out, f64::MAX)),
        serde_json::to_string(&f64::MAX).unwrap()
    );
}

#[test]
fn bytes_are_latin1_characters() {
    let text = written(|out| push_latin1(out, &[0x00, 0x41, 0xe9, 0xff]));
    let read: String = serde_json::from_str(&text).unwrap();
    assert_eq!(read, "\u{0}A\u{e9}\u{ff}");
}

proptest! {
    #[test]
    fn any_string_is_escaped_as_serde_json_escapes_it(text in any::<String>()) {
        prop_assert_eq!(written(|out| push_str(out, text.as_bytes())), serde_json::to_string(&text).unwrap());
    }

    #[test]
    fn any_integer_reads_back(value in any::<i64>()) {
        let text = written(|out| push_i64(out, value));
        prop_assert_eq!(serde_json::from_str::<i64>(&text).unwrap(), value);
    }

    #[test]
    fn any_finite_float_reads_back(value in any::<f32>().prop_filter("finite", |v| v.is_finite())) {
        // Read back with the standard library's exact parser (serde_json's
        // default one may be a unit in the last place off).
        let text = written(|out| push_f32(out, value));
        prop_assert_eq!(text.parse::<f32>().unwrap(), value);
        prop_assert_eq!(&text, &serde_json::to_string(&value).unwrap());
        let double = f64::from(value) * 1.000_000_1;
        let text = written(|out| push_f64(out, double));
        prop_assert_eq!(text.parse::<f64>().unwrap(), double);
        prop_assert_eq!(&text, &serde_json::to_string(&double).unwrap());
    }
}

proptest! {
    /// Escapes at every position of the eight-byte chunks.
    #[test]
    fn strings_of_escapes_and_text_are_escaped_as_serde_json_escapes_them(
        text in proptest::collection::vec(
            prop::sample::select(vec!['a', 'é', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '🎉', '\u{7f}']),
            0..40,
        ).prop_map(|chars| chars.into_iter().collect::<String>()),
    ) {
        prop_assert_eq!(written(|out| push_str(out, text.as_bytes())), serde_json::to_string(&text).unwrap());
    }
}
