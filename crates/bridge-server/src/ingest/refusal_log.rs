//! Refusals of `POST /currents` in the log: a line when they start, at most
//! one summary per [`SUMMARY_INTERVAL`] while they go on, and a line when
//! batches are accepted again; never a line per request.
//!
//! Under back-pressure (the spool is full, the bridge is shutting down) every
//! request is answered 503 with `Retry-After`. That is the intended answer,
//! and Braze may send thousands of requests a second: a line for each would
//! drown the log, and cost CPU and disk just when the bridge is behind. A
//! Braze connector with a wrong token would do the same with 401s, which an
//! operator must see (Braze drops a batch answered 401), but once, not a
//! thousand times. Exact counts are in the metrics
//! (`bridge_ingest_requests_total{status}`,
//! `bridge_ingest_unavailable_requests_total{reason}`); the log says when
//! refusals start, that they go on, and when they stop.
//!
//! Each [`Refusal`] has its own [`Episode`]. Its lines are at least
//! [`SUMMARY_INTERVAL`] apart, and each refusal is counted in exactly one
//! line: the first refusal is logged at once; later ones are counted, and the
//! first refusal after the interval logs the count; the first accepted batch
//! after the interval logs the end, with the refusals not yet reported. So a
//! spool hovering at its bound (a batch accepted for each one delivered, the
//! others refused) logs one line per interval, not two per delivered batch;
//! the price is that the end of refusals shorter than the interval is logged
//! up to an interval late. Only the 503 kinds end when a batch is accepted:
//! a wrong token goes on being wrong whatever other requests do.
//!
//! Not here: a 500 is a fault of ours and the trace layer logs each one at
//! error level; other client errors (400, 413) are logged at debug level.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Unavailable;

/// Lines about one kind of refusal are at least this far apart.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// A kind of refusal the log reports; a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 503: the batch cannot be stored now; Braze retries it.
    Unavailable(Unavailable),
    /// 401: no bearer token.
    MissingToken,
    /// 401: a bearer token that is not configured.
    WrongToken,
}

/// One line of the log, as [`Episode`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// Refusals started: `n_refused` since the last line (1, unless they
    /// came back within an interval of the last line).
    Started {
        /// Refusals counted in this line.
        n_refused: u64,
    },
    /// Refusals go on: `n_refused` in the `over` since the last line.
    Summary {
        /// Refusals counted in this line.
        n_refused: u64,
        /// Time since the last line.
        over: Duration,
    },
    /// A batch was accepted again; `n_refused` since the last line.
    Resumed {
        /// Refusals counted in this line.
        n_refused: u64,
        /// Time since the last line.
        over: Duration,
    },
}

/// One kind of refusal: what the log last said, and what it has not said yet.
#[derive(Debug, Default)]
pub(crate) struct Episode {
    /// The last line said refusals were going on.
    refusing: bool,
    /// Refusals not counted in any line yet.
    n_unreported: u64,
    /// When the last line was logged.
    last_line_at: Option<Instant>,
}

/// The refusal episodes of one ingest endpoint, and their lines.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    episodes: Mutex<Vec<(Refusal, Episode)>>,
}

impl Refusal {
    /// Whether accepting a batch ends it: true for the 503 kinds.
    fn ends_on_acceptance(self) -> bool {
        matches!(self, Refusal::Unavailable(_))
    }

    /// The `reason` field of its lines.
    fn label(self) -> &'static str {
        match self {
            Refusal::Unavailable(unavailable) => unavailable.label(),
            Refusal::MissingToken => "missing_token",
            Refusal::WrongToken => "wrong_token",
        }
    }

    /// Why, in words.
    fn describe(self) -> String {
        match self {
            Refusal::Unavailable(unavailable) => unavailable.to_string(),
            Refusal::MissingToken => "no bearer token".to_owned(),
            Refusal::WrongToken => "a bearer token that is not configured".to_owned(),
        }
    }
}

impl Episode {
    /// Counts a refusal at `now`; returns the line to log, if one is due.
    pub(crate) fn refused(&mut self, now: Instant, interval: Duration) -> Option<Line> {
        self.n_unreported += 1;
        if !self.is_due(now, interval) {
            return None;
        }
        let n_refused = std::mem::take(&mut self.n_unreported);
        let line = match self.last_line_at {
            Some(last_line_at) if self.refusing => Line::Summary {
                n_refused,
                over: now.saturating_duration_since(last_line_at),
            },
            _ => Line::Started { n_refused },
        };
        self.refusing = true;
        self.last_line_at = Some(now);
        Some(line)
    }

    /// Notes an accepted batch at `now`; returns the line that ends the
    /// refusals, if there were any and a line is due.
    pub(crate) fn accepted(&mut self, now: Instant, interval: Duration) -> Option<Line> {
        if !self.refusing && self.n_unreported == 0 {
            return None;
        }
        if !self.is_due(now, interval) {
            return None;
        }
        let over = self.last_line_at.map_or(Duration::ZERO, |last_line_at| {
            now.saturating_duration_since(last_line_at)
        });
        let line = Line::Resumed {
            n_refused: std::mem::take(&mut self.n_unreported),
            over,
        };
        self.refusing = false;
        self.last_line_at = Some(now);
        Some(line)
    }

    fn is_due(&self, now: Instant, interval: Duration) -> bool {
        self.last_line_at
            .is_none_or(|last_line_at| now.saturating_duration_since(last_line_at) >= interval)
    }
}

impl RefusalLog {
    /// A log with at most one line per kind of refusal per `interval`.
    pub(crate) fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            episodes: Mutex::new(Vec::new()),
        }
    }

    /// Counts a refusal at `now` and logs a line if one is due; returns it.
    pub(crate) fn refused(&self, refusal: Refusal, now: Instant) -> Option<Line> {
        let line = {
            let mut episodes = self
                .episodes
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let episode_idx = match episodes.iter().position(|(kind, _)| *kind == refusal) {
                Some(episode_idx) => episode_idx,
                None => {
                    episodes.push((refusal, Episode::default()));
                    episodes.len() - 1
                }
            };
            episodes[episode_idx].1.refused(now, self.interval)
        };
        if let Some(line) = line {
            log(refusal, line);
        }
        line
    }

    /// Notes an accepted batch at `now`: ends the 503 refusals, logging the
    /// end of each when a line is due; returns the lines.
    pub(crate) fn accepted(&self, now: Instant) -> Vec<(Refusal, Line)> {
        let lines: Vec<(Refusal, Line)> = {
            let mut episodes = self
                .episodes
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            episodes
                .iter_mut()
                .filter(|(refusal, _)| refusal.ends_on_acceptance())
                .filter_map(|(refusal, episode)| {
                    Some((*refusal, episode.accepted(now, self.interval)?))
                })
                .collect()
        };
        for (refusal, line) in &lines {
            log(*refusal, *line);
        }
        lines
    }
}

/// Writes one line: refusals at warning level (error level when the storage
/// fails), their end at info level.
fn log(refusal: Refusal, line: Line) {
    let reason = refusal.label();
    let why = refusal.describe();
    let is_fault = refusal == Refusal::Unavailable(Unavailable::StorageError);
    let answer = if refusal.ends_on_acceptance() {
        "batches with 503 (Braze retries them)"
    } else {
        "requests with 401 (Braze drops their batches)"
    };
    match line {
        Line::Started { n_refused } if is_fault => {
            tracing::error!(reason, n_refused, "Refusing Currents {answer}: {why}.");
        }
        Line::Started { n_refused } => {
            tracing::warn!(reason, n_refused, "Refusing Currents {answer}: {why}.");
        }
        Line::Summary { n_refused, over } if is_fault => {
            let over_secs = over.as_secs();
            tracing::error!(
                reason,
                n_refused,
                over_secs,
                "Still refusing Currents {answer}: {why}."
            );
        }
        Line::Summary { n_refused, over } => {
            let over_secs = over.as_secs();
            tracing::warn!(
                reason,
                n_refused,
                over_secs,
                "Still refusing Currents {answer}: {why}."
            );
        }
        Line::Resumed { n_refused, over } => {
            let over_secs = over.as_secs();
            tracing::info!(
                reason,
                n_refused,
                over_secs,
                "Accepting Currents batches again after refusing them: {why}."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    /// Refusals every `every` from `start` for `length`; the lines they log.
    fn refuse_for(
        episode: &mut Episode,
        start: Instant,
        length: Duration,
        every: Duration,
    ) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut at = start;
        while at < start + length {
            lines.extend(episode.refused(at, INTERVAL));
            at += every;
        }
        lines
    }

    fn n_refused(line: &Line) -> u64 {
        match *line {
            Line::Started { n_refused }
            | Line::Summary { n_refused, .. }
            | Line::Resumed { n_refused, .. } => n_refused,
        }
    }

    #[test]
    fn refusals_log_a_start_then_one_summary_per_interval() {
        let start = Instant::now();
        let mut episode = Episode::default();
        // 1000 refusals a second for 35 s.
        let lines = refuse_for(
            &mut episode,
            start,
            Duration::from_secs(35),
            Duration::from_millis(1),
        );
        assert_eq!(lines[0], Line::Started { n_refused: 1 });
        let summaries: Vec<&Line> = lines[1..].iter().collect();
        assert_eq!(summaries.len(), 3, "{lines:?}");
        for summary in &summaries {
            assert_eq!(
                **summary,
                Line::Summary {
                    n_refused: 10_000,
                    over: INTERVAL
                }
            );
        }

        // Accepted 5 s after the last summary: too soon for a line.
        assert_eq!(
            episode.accepted(start + Duration::from_secs(35), INTERVAL),
            None
        );
        // The next accepted batch after the interval ends the refusals and
        // counts the last 5 s of them; then nothing more is said.
        let resumed = episode.accepted(start + Duration::from_secs(41), INTERVAL);
        assert_eq!(
            resumed,
            Some(Line::Resumed {
                n_refused: 4999,
                over: Duration::from_secs(11)
            })
        );
        let n_logged: u64 = lines.iter().chain(&resumed).map(n_refused).sum();
        assert_eq!(n_logged, 35_000, "every refusal is counted in one line");
        assert_eq!(
            episode.accepted(start + Duration::from_secs(60), INTERVAL),
            None
        );

        // Refusals starting again start a new episode.
        assert_eq!(
            episode.refused(start + Duration::from_secs(61), INTERVAL),
            Some(Line::Started { n_refused: 1 })
        );
    }

    #[test]
    fn a_spool_hovering_at_its_bound_logs_one_line_per_interval() {
        let start = Instant::now();
        let mut episode = Episode::default();
        let mut lines = Vec::new();
        let mut n_refusals = 0;
        // For 60 s, every 10 ms: nine refusals, one accepted batch.
        for step_idx in 0..6000u32 {
            let at = start + Duration::from_millis(10) * step_idx;
            if step_idx % 10 == 9 {
                lines.extend(episode.accepted(at, INTERVAL));
            } else {
                n_refusals += 1;
                lines.extend(episode.refused(at, INTERVAL));
            }
        }
        // A start, then one line per interval: never two per accepted batch.
        assert!(
            (6..=7).contains(&lines.len()),
            "{} lines: {lines:?}",
            lines.len()
        );
        let n_logged: u64 = lines.iter().map(n_refused).sum();
        assert_eq!(n_logged + episode.n_unreported, n_refusals);
    }

    #[test]
    fn refusals_shorter_than_the_interval_end_with_the_next_batch_after_it() {
        let start = Instant::now();
        let mut episode = Episode::default();
        assert_eq!(
            episode.refused(start, INTERVAL),
            Some(Line::Started { n_refused: 1 })
        );
        assert_eq!(
            episode.refused(start + Duration::from_secs(1), INTERVAL),
            None
        );
        for secs in 2..10 {
            assert_eq!(
                episode.accepted(start + Duration::from_secs(secs), INTERVAL),
                None
            );
        }
        assert_eq!(
            episode.accepted(start + Duration::from_secs(10), INTERVAL),
            Some(Line::Resumed {
                n_refused: 1,
                over: INTERVAL
            })
        );
    }

    #[test]
    fn an_accepted_batch_ends_only_the_503_refusals() {
        let log = RefusalLog::new(INTERVAL);
        let start = Instant::now();
        let spool_full = Refusal::Unavailable(Unavailable::SpoolFull);
        assert!(log.refused(spool_full, start).is_some());
        assert!(log.refused(Refusal::WrongToken, start).is_some());
        assert_eq!(log.refused(Refusal::WrongToken, start), None);
        let ended = log.accepted(start + INTERVAL);
        assert_eq!(
            ended,
            vec![(
                spool_full,
                Line::Resumed {
                    n_refused: 0,
                    over: INTERVAL
                }
            )]
        );
        assert_eq!(
            log.refused(Refusal::WrongToken, start + INTERVAL),
            Some(Line::Summary {
                n_refused: 2,
                over: INTERVAL
            })
        );
        assert!(log.accepted(start + INTERVAL * 3).is_empty());
    }
}
