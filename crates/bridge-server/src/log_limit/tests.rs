//! Tests of the episodes, with the time passed in.

use super::*;

const INTERVAL: Duration = Duration::from_secs(10);

/// Events every `every` from `start` for `length`; the lines they log.
fn occur_for(
    episode: &mut Episode,
    start: Instant,
    length: Duration,
    every: Duration,
) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut at = start;
    while at < start + length {
        lines.extend(episode.occurred(at, INTERVAL));
        at += every;
    }
    lines
}

#[test]
fn events_log_a_start_then_one_summary_per_interval() {
    let start = Instant::now();
    let mut episode = Episode::default();
    // 1000 events a second for 35 s.
    let lines = occur_for(
        &mut episode,
        start,
        Duration::from_secs(35),
        Duration::from_millis(1),
    );
    assert_eq!(lines[0], Line::Started { n_events: 1 });
    let summaries: Vec<&Line> = lines[1..].iter().collect();
    assert_eq!(summaries.len(), 3, "{lines:?}");
    for summary in &summaries {
        assert_eq!(
            **summary,
            Line::Summary {
                n_events: 10_000,
                over: INTERVAL
            }
        );
    }

    // A success 5 s after the last summary: too soon for a line.
    assert_eq!(
        episode.ended(start + Duration::from_secs(35), INTERVAL),
        None
    );
    // The next success after the interval ends the episode and counts the
    // last 5 s of events; then nothing more is said.
    let ended = episode.ended(start + Duration::from_secs(41), INTERVAL);
    assert_eq!(
        ended,
        Some(Line::Ended {
            n_events: 4999,
            over: Duration::from_secs(11)
        })
    );
    let n_logged: u64 = lines.iter().chain(&ended).map(|line| line.n_events()).sum();
    assert_eq!(n_logged, 35_000, "every event is counted in one line");
    assert_eq!(
        episode.ended(start + Duration::from_secs(60), INTERVAL),
        None
    );

    // Events starting again start a new episode.
    assert_eq!(
        episode.occurred(start + Duration::from_secs(61), INTERVAL),
        Some(Line::Started { n_events: 1 })
    );
}

#[test]
fn hovering_between_failing_and_working_logs_one_line_per_interval() {
    let start = Instant::now();
    let mut episode = Episode::default();
    let mut lines = Vec::new();
    let mut n_events = 0;
    // For 60 s, every 10 ms: nine events, one success.
    for step_idx in 0..6000u32 {
        let at = start + Duration::from_millis(10) * step_idx;
        if step_idx % 10 == 9 {
            lines.extend(episode.ended(at, INTERVAL));
        } else {
            n_events += 1;
            lines.extend(episode.occurred(at, INTERVAL));
        }
    }
    // A start, then one line per interval: never two per success.
    assert!(
        (6..=7).contains(&lines.len()),
        "{} lines: {lines:?}",
        lines.len()
    );
    let n_logged: u64 = lines.iter().map(|line| line.n_events()).sum();
    assert_eq!(n_logged + episode.n_unreported(), n_events);
}

#[test]
fn events_shorter_than_the_interval_end_with_the_next_success_after_it() {
    let start = Instant::now();
    let mut episode = Episode::default();
    assert_eq!(
        episode.occurred(start, INTERVAL),
        Some(Line::Started { n_events: 1 })
    );
    assert_eq!(
        episode.occurred(start + Duration::from_secs(1), INTERVAL),
        None
    );
    for secs in 2..10 {
        assert_eq!(
            episode.ended(start + Duration::from_secs(secs), INTERVAL),
            None
        );
    }
    assert_eq!(
        episode.ended(start + Duration::from_secs(10), INTERVAL),
        Some(Line::Ended {
            n_events: 1,
            over: INTERVAL
        })
    );
}

#[test]
fn a_success_without_events_says_nothing() {
    let start = Instant::now();
    let mut episode = Episode::default();
    for secs in 0..30 {
        assert_eq!(
            episode.ended(start + Duration::from_secs(secs), INTERVAL),
            None
        );
    }
    assert_eq!(
        episode.occurred(start + Duration::from_secs(30), INTERVAL),
        Some(Line::Started { n_events: 1 })
    );
}

#[test]
fn each_kind_has_its_own_episode_and_ends_only_when_asked() {
    let episodes = Episodes::<(usize, bool)>::new(INTERVAL);
    let start = Instant::now();
    assert_eq!(
        episodes.occurred((0, false), start),
        Some(Line::Started { n_events: 1 })
    );
    assert_eq!(
        episodes.occurred((1, false), start),
        Some(Line::Started { n_events: 1 }),
        "another kind starts its own episode"
    );
    assert_eq!(episodes.occurred((0, false), start), None);
    assert_eq!(episodes.n_unreported((0, false)), 1);
    assert_eq!(episodes.n_unreported((0, true)), 0, "never seen");

    // A success of kind 0 ends kind 0 only.
    let ended = episodes.ended(start + INTERVAL, |(project_idx, _)| project_idx == 0);
    assert_eq!(
        ended,
        vec![(
            (0, false),
            Line::Ended {
                n_events: 1,
                over: INTERVAL
            }
        )]
    );
    assert_eq!(
        episodes.occurred((1, false), start + INTERVAL),
        Some(Line::Summary {
            n_events: 1,
            over: INTERVAL
        })
    );
    assert!(
        episodes
            .ended(start + INTERVAL * 3, |(project_idx, _)| project_idx == 0)
            .is_empty()
    );
}
