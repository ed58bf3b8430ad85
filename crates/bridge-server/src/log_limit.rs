//! Repeated events in the log, per episode: a line when they start, at most
//! one summary per interval while they go on, and a line when they end;
//! never a line per event.
//!
//! Some events come in floods: a refused Currents request under
//! back-pressure, a group commit on a full disk, a delivery attempt while
//! Mixpanel is down. A line for each would drown the log and cost CPU and
//! disk just when the bridge is in trouble. The metrics count every event;
//! the log says when they start, that they go on and how many there were,
//! and when they stop. `ingest::refusal_log`, the spool's writer and
//! delivery each keep their own [`Episode`]s and choose their own words and
//! levels; this module only decides when a line is due.
//!
//! An [`Episode`]'s lines are at least the interval apart, and each event is
//! counted in exactly one line: the first event is logged at once; later
//! ones are counted, and the first event after the interval logs the count;
//! the first success after the interval logs the end, with the events not
//! yet reported. So something that hovers between failing and working (a
//! spool at its bound, a Mixpanel answering some requests) logs one line per
//! interval, not two per success; the price is that an end coming within an
//! interval of the last line is logged with the first success after the
//! interval, and events starting again within an interval of the end are
//! reported with the next line that is due. Time is passed in, so tests
//! need no clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines about one episode are at least this far apart.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// One line of the log, as an [`Episode`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// Events started: `n_events` since the last line (1, unless they came
    /// back within an interval of the last line).
    Started {
        /// Events counted in this line.
        n_events: u64,
    },
    /// Events go on: `n_events` in the `over` since the last line.
    Summary {
        /// Events counted in this line.
        n_events: u64,
        /// Time since the last line.
        over: Duration,
    },
    /// A success ended them; `n_events` since the last line.
    Ended {
        /// Events counted in this line.
        n_events: u64,
        /// Time since the last line.
        over: Duration,
    },
}

/// One kind of event: what the log last said, and what it has not said yet.
#[derive(Debug, Default)]
pub(crate) struct Episode {
    /// The last line said the events were going on.
    ongoing: bool,
    /// Events not counted in any line yet.
    n_unreported: u64,
    /// When the last line was logged.
    last_line_at: Option<Instant>,
}

/// Episodes by kind, shared between threads (delivery workers, requests).
#[derive(Debug)]
pub(crate) struct Episodes<K> {
    interval: Duration,
    episodes: Mutex<Vec<(K, Episode)>>,
}

impl Line {
    /// The events this line counts.
    pub(crate) fn n_events(self) -> u64 {
        match self {
            Line::Started { n_events }
            | Line::Summary { n_events, .. }
            | Line::Ended { n_events, .. } => n_events,
        }
    }

    /// The time since the last line (zero for a start).
    pub(crate) fn over(self) -> Duration {
        match self {
            Line::Started { .. } => Duration::ZERO,
            Line::Summary { over, .. } | Line::Ended { over, .. } => over,
        }
    }
}

impl Episode {
    /// Counts an event at `now`; returns the line to log, if one is due.
    pub(crate) fn occurred(&mut self, now: Instant, interval: Duration) -> Option<Line> {
        self.n_unreported += 1;
        if !self.is_due(now, interval) {
            return None;
        }
        let n_events = std::mem::take(&mut self.n_unreported);
        let line = match self.last_line_at {
            Some(last_line_at) if self.ongoing => Line::Summary {
                n_events,
                over: now.saturating_duration_since(last_line_at),
            },
            _ => Line::Started { n_events },
        };
        self.ongoing = true;
        self.last_line_at = Some(now);
        Some(line)
    }

    /// Notes a success at `now`; returns the line that ends the events, if
    /// there were any and a line is due.
    pub(crate) fn ended(&mut self, now: Instant, interval: Duration) -> Option<Line> {
        if !self.ongoing && self.n_unreported == 0 {
            return None;
        }
        if !self.is_due(now, interval) {
            return None;
        }
        let over = self.last_line_at.map_or(Duration::ZERO, |last_line_at| {
            now.saturating_duration_since(last_line_at)
        });
        let line = Line::Ended {
            n_events: std::mem::take(&mut self.n_unreported),
            over,
        };
        self.ongoing = false;
        self.last_line_at = Some(now);
        Some(line)
    }

    /// Events counted but not yet in a line.
    #[cfg(test)]
    pub(crate) fn n_unreported(&self) -> u64 {
        self.n_unreported
    }

    fn is_due(&self, now: Instant, interval: Duration) -> bool {
        self.last_line_at
            .is_none_or(|last_line_at| now.saturating_duration_since(last_line_at) >= interval)
    }
}

impl<K: Copy + PartialEq> Episodes<K> {
    /// Episodes with at most one line per kind per `interval`.
    pub(crate) fn new(interval: Duration) -> Episodes<K> {
        Episodes {
            interval,
            episodes: Mutex::new(Vec::new()),
        }
    }

    /// Counts an event of kind `key` at `now`; returns the line to log, if
    /// one is due.
    pub(crate) fn occurred(&self, key: K, now: Instant) -> Option<Line> {
        let mut episodes = self.lock();
        let episode_idx = match episodes.iter().position(|(kind, _)| *kind == key) {
            Some(episode_idx) => episode_idx,
            None => {
                episodes.push((key, Episode::default()));
                episodes.len() - 1
            }
        };
        episodes[episode_idx].1.occurred(now, self.interval)
    }

    /// Notes a success that ends the episodes whose kind `ends` says yes
    /// to; returns the lines that are due.
    pub(crate) fn ended(&self, now: Instant, ends: impl Fn(K) -> bool) -> Vec<(K, Line)> {
        let mut episodes = self.lock();
        episodes
            .iter_mut()
            .filter(|(key, _)| ends(*key))
            .filter_map(|(key, episode)| Some((*key, episode.ended(now, self.interval)?)))
            .collect()
    }

    /// Events of kind `key` counted but not yet in a line.
    #[cfg(test)]
    pub(crate) fn n_unreported(&self, key: K) -> u64 {
        self.lock()
            .iter()
            .find(|(kind, _)| *kind == key)
            .map_or(0, |(_, episode)| episode.n_unreported)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(K, Episode)>> {
        self.episodes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests;
