//! The wall clock as UNIX milliseconds, the unit in which the spool, ingest,
//! the dead-letter commands and the operations endpoints keep times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in UNIX milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
