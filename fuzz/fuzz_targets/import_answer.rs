//! Mixpanel's `/import` answers, as a hostile or broken upstream (or a
//! proxy in between) could send them: a 400's body read as a partial
//! success, and the message kept from any answer. Neither may panic; a
//! partial success names each refused record once, in order, inside the
//! request; a message stays short.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&size, body)) = input.split_first() else {
        return;
    };
    let n_records = usize::from(size);
    if let Some((_, indexes)) = mixpanel_client::fuzzing::read_import_refusal(body, n_records) {
        assert!(!indexes.is_empty());
        assert!(indexes.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(indexes.iter().all(|index| *index < n_records));
    }
    let message = mixpanel_client::fuzzing::answer_message(body);
    assert!(message.chars().count() <= 301, "{message:?}");
});
