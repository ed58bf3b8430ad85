//! Counts the events of a Currents archive by type: lists the objects a
//! type prefix and a time window keep, reads each, and reports what it
//! found, with the first error of each damaged object.
//!
//! Run with: `cargo run -p currents-archive --example summarize_archive -- LOCATION [TYPE_PREFIX [SINCE [UNTIL]]]`
//! where LOCATION is a directory, `file://`, `s3://`, `gs://` or `az://`
//! URL (credentials from the environment), TYPE_PREFIX keeps the event
//! types that start with it (`users.messages.email.`), and SINCE and UNTIL
//! are UNIX seconds.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;

use currents_archive::events::ObjectEvents;
use currents_archive::layout::Prune;
use currents_archive::store::ArchiveStore;
use currents_model::Event;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let location = args
        .next()
        .ok_or("usage: summarize_archive LOCATION [TYPE_PREFIX [SINCE [UNTIL]]]")?;
    let mut prune = Prune::new();
    if let Some(type_prefix) = args.next().filter(|prefix| !prefix.is_empty()) {
        prune = prune.event_types(Arc::new(move |event_type: &str| {
            event_type.starts_with(&type_prefix)
        }));
    }
    if let Some(since) = args.next() {
        prune = prune.since(since.parse()?);
    }
    if let Some(until) = args.next() {
        prune = prune.until(until.parse()?);
    }

    let store = ArchiveStore::open(&location)?;
    let listing = store.list(&prune).await?;
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut invalid = 0_u64;
    let mut damaged = Vec::new();
    let mut text = String::new();
    for object in &listing.objects {
        let bytes = store.get(object).await?;
        let mut events = match ObjectEvents::for_object(object, bytes) {
            Ok(events) => events,
            Err(error) => {
                damaged.push(format!("{}: {error}", object.key));
                continue;
            }
        };
        loop {
            text.clear();
            match events.next_into(&mut text) {
                Ok(true) => match Event::parse(&text) {
                    Ok(event) => *by_type.entry(event.event_type.to_string()).or_default() += 1,
                    Err(_) => invalid += 1,
                },
                Ok(false) => break,
                Err(error) => {
                    damaged.push(format!("{}: {error}", object.key));
                    break;
                }
            }
        }
    }

    #[allow(clippy::print_stdout)]
    {
        for (event_type, count) in &by_type {
            println!("{count:>10}  {event_type}");
        }
        println!("{:>10}  events in total", by_type.values().sum::<u64>());
        println!("{invalid:>10}  events that do not parse");
        println!(
            "{:>10}  objects read, {} not Avro or batches",
            listing.objects.len(),
            listing.skipped_keys.len()
        );
        for line in &damaged {
            println!("damaged: {line}");
        }
        println!("{:?}", store.stats());
    }
    Ok(())
}
