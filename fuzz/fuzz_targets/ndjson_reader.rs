//! `mixpanel_client::reader`: events out of NDJSON or JSON arrays, as
//! `import` reads files. Arbitrary input never panics, and every event
//! reported is a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixpanel_client::reader::{InputItem, read_events};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let _ = read_events(&mut input, &mut |_position, item| {
        if let InputItem::Event(event) = item {
            let value: serde_json_check::Value = serde_json_check::from_slice(event)
                .expect("an event is JSON");
            assert!(value.is_object(), "an event is a JSON object");
        }
        Ok(())
    });
});
