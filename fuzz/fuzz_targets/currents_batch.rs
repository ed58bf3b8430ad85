//! Differential: `Batch::parse_events` (one pass, the fast scanner) must
//! agree with `Batch::parse` then `Event::parse` per event (two steps) on
//! every input: the same events, each read or refused alike.
#![no_main]

use currents_model::{Batch, Event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let one_pass = Batch::parse_events(text);
    let two_steps = Batch::parse(text);
    match (one_pass, two_steps) {
        (Ok(events), Ok(batch)) => {
            assert_eq!(events.len(), batch.events.len(), "event counts differ");
            for (parsed, raw) in events.iter().zip(batch.events.iter()) {
                let again = Event::parse(raw.get());
                assert_eq!(parsed.event.is_ok(), again.is_ok(), "verdicts differ on {raw:?}");
                if let (Ok(fast), Ok(slow)) = (&parsed.event, &again) {
                    assert_eq!(fast.id, slow.id);
                    assert_eq!(fast.event_type, slow.event_type);
                    assert_eq!(fast.time, slow.time);
                }
            }
        }
        (Err(_), Err(_)) => {}
        (one_pass, two_steps) => panic!(
            "one pass {:?} but two steps {:?}",
            one_pass.map(|events| events.len()),
            two_steps.map(|batch| batch.events.len())
        ),
    }
});
