//! Counts the events of Currents batches by type and lists invalid ones.
//!
//! Run with: `cargo run -p currents-model --example summarize -- FILE`
//! where FILE holds one `{"events": [...]}` envelope per line (or one
//! envelope in the whole file).

use std::collections::BTreeMap;
use std::error::Error;

use currents_model::{Batch, Event};

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args().nth(1).ok_or("usage: summarize FILE")?;
    let text = std::fs::read_to_string(&path)?;
    let batches: Vec<&str> = match Batch::parse(&text) {
        Ok(_) => vec![text.as_str()],
        Err(_) => text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect(),
    };
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (batch_idx, body) in batches.iter().enumerate() {
        let batch = Batch::parse(body).map_err(|error| format!("batch {batch_idx}: {error}"))?;
        for raw in &batch.events {
            match Event::from_raw(raw) {
                Ok(event) => *by_type.entry(event.event_type.to_string()).or_default() += 1,
                Err(invalid) => {
                    *by_type
                        .entry(format!("(invalid: {})", invalid.reason))
                        .or_default() += 1
                }
            }
        }
    }
    for (event_type, count) in by_type {
        #[allow(clippy::print_stdout)]
        {
            println!("{count:>8}  {event_type}");
        }
    }
    Ok(())
}
