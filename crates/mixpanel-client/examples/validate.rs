//! Checks Mixpanel events (NDJSON) for the properties `/import` requires.
//!
//! Run with: `cargo run -p mixpanel-client --example validate -- FILE`

use std::error::Error;
use std::io::BufRead;

use mixpanel_client::Event;

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args().nth(1).ok_or("usage: validate FILE")?;
    let reader = std::io::BufReader::new(std::fs::File::open(&path)?);
    let mut n_events = 0u64;
    let mut n_problems = 0u64;
    for (line_idx, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        n_events += 1;
        let problem = match Event::from_json(&line) {
            Err(error) => Some(format!("not an event: {error}")),
            Ok(event) if event.time().is_none() => Some("no integer `time`".to_owned()),
            Ok(event) if !event.properties.contains_key("distinct_id") => {
                Some("no `distinct_id`".to_owned())
            }
            Ok(event) if event.insert_id().is_none() => Some("no `$insert_id`".to_owned()),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            n_problems += 1;
            #[allow(clippy::print_stdout)]
            {
                println!("line {}: {problem}", line_idx + 1);
            }
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{n_events} events, {n_problems} with problems");
    }
    Ok(())
}
