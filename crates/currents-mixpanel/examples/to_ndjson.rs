//! Maps Currents events from standard input to Mixpanel NDJSON on standard
//! output; skipped and invalid events go to standard error with their
//! reason, then a summary.
//!
//! Run with: `cargo run -p currents-mixpanel --example to_ndjson < batch.json`

use std::error::Error;
use std::io::{self, Write as _};

use currents_mixpanel::transform::transform;
use currents_mixpanel::{Mapper, MappingConfig};

fn main() -> Result<(), Box<dyn Error>> {
    let mapper = Mapper::new(MappingConfig {
        project_token: std::env::var("MIXPANEL_PROJECT_TOKEN").ok(),
        ..MappingConfig::default()
    });
    let mut input = io::stdin().lock();
    let mut output = io::BufWriter::new(io::stdout().lock());
    let mut rejects = io::stderr().lock();
    let summary = transform(&mut input, &mut output, &mut rejects, &mapper)?;
    output.flush()?;
    let counts = &summary.counts;
    writeln!(
        rejects,
        "{} events: {} mapped, {} skipped, {} invalid",
        counts.total(),
        counts.mapped,
        counts.total_skipped(),
        counts.total_invalid()
    )?;
    Ok(())
}
