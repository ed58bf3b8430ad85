//! One Currents event, in either wire shape: reading never panics, and an
//! event read once reads the same from its own text.
#![no_main]

use currents_model::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = Event::parse(text) {
        let again = Event::parse(text).expect("the same text reads again");
        assert_eq!(event.id, again.id);
    }
});
