//! The pipeline's promises: order, bounds, early stop, panics, every result
//! once; with one thread (inline) and with several.

use std::num::NonZeroUsize;
use std::panic;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::{Config, ordered, unordered};

fn config(threads: usize, max_units_in_flight: usize) -> Config {
    Config::new(NonZeroUsize::new(threads).unwrap())
        .max_units_in_flight(NonZeroUsize::new(max_units_in_flight).unwrap())
}

/// A few microseconds of "work", different for each unit.
fn busy(unit: u64, seed: u64) {
    let micros = (unit ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    std::thread::sleep(Duration::from_micros(micros));
}

/// Counts the values alive, and the most ever alive at once.
#[derive(Clone, Default)]
struct Census {
    alive: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Census {
    fn enter(&self) -> Alive {
        let alive = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(alive, Ordering::SeqCst);
        Alive(self.alive.clone())
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// One live value of a [`Census`].
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn ordered_keeps_unit_order_under_random_work_durations(
        threads in 1usize..=4,
        max_in_flight in 1usize..=8,
        n_units in 0u64..120,
        seed in any::<u64>(),
    ) {
        let mut seen = Vec::new();
        let res: Result<(), ()> = ordered(
            0..n_units,
            &config(threads, max_in_flight),
            |unit| {
                busy(unit, seed);
                unit * 3
            },
            |result| {
                seen.push(result);
                Ok(())
            },
        );
        prop_assert!(res.is_ok());
        prop_assert_eq!(seen, (0..n_units).map(|unit| unit * 3).collect::<Vec<_>>());
    }

    #[test]
    fn unordered_emits_every_result_exactly_once(
        threads in 1usize..=4,
        max_in_flight in 1usize..=6,
        max_queued in 1usize..=4,
        results_per_unit in proptest::collection::vec(0u64..12, 0..40),
        seed in any::<u64>(),
    ) {
        let config = config(threads, max_in_flight)
            .max_queued_results(NonZeroUsize::new(max_queued).unwrap());
        let mut seen = Vec::new();
        let res: Result<(), ()> = unordered(
            results_per_unit.iter().copied().enumerate(),
            &config,
            |(unit, n_results), emit| {
                for result in 0..n_results {
                    busy(result, seed);
                    emit((unit, result));
                }
            },
            |result| {
                seen.push(result);
                Ok(())
            },
        );
        prop_assert!(res.is_ok());
        // Each unit's results in the order it emitted them.
        for (unit, &n_results) in results_per_unit.iter().enumerate() {
            let of_unit: Vec<u64> = seen
                .iter()
                .filter(|(of, _)| *of == unit)
                .map(|(_, result)| *result)
                .collect();
            prop_assert_eq!(of_unit, (0..n_results).collect::<Vec<_>>());
        }
        prop_assert_eq!(seen.len() as u64, results_per_unit.iter().sum::<u64>());
    }
}

#[test]
fn ordered_keeps_at_most_the_bound_of_units_alive() {
    for (threads, max_in_flight) in [(1, 1), (2, 1), (2, 3), (4, 2), (3, 8)] {
        let census = Census::default();
        let units = (0..300u64).map(|unit| (unit, census.enter()));
        let mut n_results = 0;
        let res: Result<(), ()> = ordered(
            units,
            &config(threads, max_in_flight),
            |(unit, alive)| {
                busy(unit, 7);
                (unit, alive)
            },
            |(_, alive)| {
                drop(alive);
                n_results += 1;
                Ok(())
            },
        );
        assert!(res.is_ok());
        assert_eq!(n_results, 300);
        let bound = if threads == 1 { 1 } else { max_in_flight };
        assert!(
            census.most() <= bound,
            "{threads} threads, bound {max_in_flight}: {} alive at once",
            census.most()
        );
    }
}

#[test]
fn unordered_keeps_at_most_the_bounds_of_units_and_results_alive() {
    for (threads, max_in_flight, max_queued) in [(1, 1, 1), (2, 2, 1), (3, 4, 2), (4, 2, 8)] {
        let units_census = Census::default();
        let results_census = Census::default();
        let units = (0..100u64).map(|unit| (unit, units_census.enter()));
        let config = config(threads, max_in_flight)
            .max_queued_results(NonZeroUsize::new(max_queued).unwrap());
        let mut n_results = 0;
        let res: Result<(), ()> = unordered(
            units,
            &config,
            |(unit, _alive), emit| {
                for result in 0..20 {
                    emit(results_census.enter());
                    busy(unit + result, 3);
                }
            },
            |alive| {
                // A slow sink: results pile up to the bound.
                std::thread::sleep(Duration::from_micros(20));
                drop(alive);
                n_results += 1;
                Ok(())
            },
        );
        assert!(res.is_ok());
        assert_eq!(n_results, 100 * 20);
        let (units_bound, results_bound) = if threads == 1 {
            (1, 1)
        } else {
            // Queued, plus one in each worker's hand and one in the sink.
            (max_in_flight, max_queued + threads + 1)
        };
        assert!(
            units_census.most() <= units_bound,
            "{}",
            units_census.most()
        );
        assert!(
            results_census.most() <= results_bound,
            "{}",
            results_census.most()
        );
    }
}

#[test]
fn a_sink_error_stops_reading_the_input() {
    for threads in [1, 2, 3] {
        let max_in_flight = 4;
        let n_read = AtomicUsize::new(0);
        // Endless input: only the error can end it.
        let units = (0u64..).inspect(|_| {
            n_read.fetch_add(1, Ordering::SeqCst);
        });
        let mut n_sunk = 0;
        let res = ordered(
            units,
            &config(threads, max_in_flight),
            |unit| unit,
            |unit| {
                n_sunk += 1;
                if unit == 100 { Err("full") } else { Ok(()) }
            },
        );
        assert_eq!(res, Err("full"));
        assert_eq!(n_sunk, 101);
        assert!(n_read.load(Ordering::SeqCst) <= 101 + max_in_flight);

        let n_read = AtomicUsize::new(0);
        let units = (0u64..).inspect(|_| {
            n_read.fetch_add(1, Ordering::SeqCst);
        });
        let res = unordered(
            units,
            &config(threads, max_in_flight),
            |unit, emit| {
                emit(unit);
                emit(unit);
            },
            |unit| if unit == 50 { Err("full") } else { Ok(()) },
        );
        assert_eq!(res, Err("full"));
        // Units finish in any order: beyond the one that failed, at most the
        // bound and one per message that came before its result.
        assert!(n_read.load(Ordering::SeqCst) <= 51 + max_in_flight + 4 * threads);
    }
}

#[test]
fn a_panic_in_work_propagates() {
    for threads in [1, 2, 3] {
        let caught = panic::catch_unwind(|| {
            let _ = ordered(
                0u64..,
                &config(threads, 4),
                |unit| {
                    assert!(unit != 17, "unit {unit} is cursed");
                    unit
                },
                |_| Ok::<(), ()>(()),
            );
        });
        let payload = caught.expect_err("the panic reaches the caller");
        assert_eq!(panic_message(payload.as_ref()), "unit 17 is cursed");

        let caught = panic::catch_unwind(|| {
            let _ = unordered(
                0u64..,
                &config(threads, 4),
                |unit, emit| {
                    emit(unit);
                    assert!(unit != 23, "unit {unit} is cursed");
                    emit(unit);
                },
                |_| Ok::<(), ()>(()),
            );
        });
        let payload = caught.expect_err("the panic reaches the caller");
        assert_eq!(panic_message(payload.as_ref()), "unit 23 is cursed");
    }
}

#[test]
fn a_panic_in_the_sink_or_the_input_propagates() {
    for threads in [2, 3] {
        let caught = panic::catch_unwind(|| {
            let _ = ordered(
                0u64..,
                &config(threads, 4),
                |unit| unit,
                |unit| {
                    assert!(unit != 40, "sink refuses {unit}");
                    Ok::<(), ()>(())
                },
            );
        });
        let payload = caught.expect_err("the panic reaches the caller");
        assert_eq!(panic_message(payload.as_ref()), "sink refuses 40");

        let caught = panic::catch_unwind(|| {
            let units = (0u64..).inspect(|unit| assert!(*unit != 30, "input fails at {unit}"));
            let _ = unordered(
                units,
                &config(threads, 4),
                |unit, emit| emit(unit),
                |_| Ok::<(), ()>(()),
            );
        });
        let payload = caught.expect_err("the panic reaches the caller");
        assert_eq!(panic_message(payload.as_ref()), "input fails at 30");
    }
}

#[test]
fn work_may_borrow_from_the_caller() {
    let words = ["alpha".to_owned(), "beta".to_owned(), "gamma".to_owned()];
    let prefix = String::from(">");
    let mut joined = String::new();
    let res: Result<(), ()> = ordered(
        words.iter(),
        &config(2, 2),
        |word| format!("{prefix}{word}"),
        |line| {
            joined.push_str(&line);
            Ok(())
        },
    );
    assert!(res.is_ok());
    assert_eq!(joined, ">alpha>beta>gamma");
}
