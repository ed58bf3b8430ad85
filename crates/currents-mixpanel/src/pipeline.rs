//! A small parallel pipeline on std threads, for batch work that should use
//! every core: units of work (chunks of a file, whole files) are read from an
//! iterator on the calling thread, worked on by a fixed set of worker
//! threads, and their results handed to a sink on the calling thread.
//!
//! Two entry points share one core:
//! - [`ordered`]: one result per unit, given to the sink **in unit order**
//!   (`transform` uses it on chunks of lines, so that its output is the
//!   single-threaded output byte for byte);
//! - [`unordered`]: any number of results per unit, given to the sink as
//!   they come (e.g. a worker decodes a whole file and emits chunks of
//!   events as it goes).
//!
//! Why this shape:
//! - the iterator and the sink stay on the calling thread, so neither needs
//!   to be `Send` (a `&mut dyn BufRead` over stdin, a `&mut dyn Write`);
//! - memory is bounded whatever the input's size: at most
//!   [`Config::max_units_in_flight`] units are read and not yet done with,
//!   and in [`unordered`] at most [`Config::max_queued_results`] results
//!   wait for the sink, after which workers wait (back-pressure);
//! - the first error of the sink stops the pipeline: no more units are
//!   read, queued units are dropped unworked, results still emitted are
//!   dropped, and the error is returned once the workers have finished the
//!   unit they were on (a unit's work is not interrupted);
//! - a panic in `work` (or in the iterator or the sink) stops the pipeline
//!   the same way and is then resumed on the calling thread, so it
//!   propagates instead of hanging;
//! - with one thread everything runs inline on the calling thread, with no
//!   thread, lock or channel, so single-core speed is not hurt.
//!
//! Worker threads are scoped ([`std::thread::scope`]), so units, results
//! and `work` may borrow from the caller; none outlives the call.
//!
//! # From async code
//!
//! Both functions block the calling thread until the input is exhausted.
//! Under tokio, run them on a thread of their own, never on a runtime
//! worker: `tokio::task::spawn_blocking` or `std::thread::spawn`, with a
//! sink that forwards each result into a bounded `tokio::sync::mpsc`
//! channel with `Sender::blocking_send`. When the async side stops (drops
//! its `Receiver`), `blocking_send` fails, the sink returns that error and
//! the pipeline stops reading; the async side sees the end of the stream
//! when the pipeline returns and drops the `Sender`. The back-pressure then
//! reaches from the async consumer to the workers: a full tokio channel
//! blocks the sink, a blocked sink fills [`Config::max_queued_results`],
//! and a full result queue blocks the workers.
//!
//! ```text
//! let (sender, mut chunks) = tokio::sync::mpsc::channel(4);
//! let reader = tokio::task::spawn_blocking(move || {
//!     pipeline::unordered(files.into_iter(), &Config::new(threads), decode_file, |chunk| {
//!         sender.blocking_send(chunk) // Err once the receiver is gone
//!     })
//! });
//! while let Some(chunk) = chunks.recv().await { /* send it */ }
//! reader.await??;
//! ```
//!
//! The same shape with std's channel, as a test:
//!
//! ```
//! use std::num::NonZeroUsize;
//! use currents_mixpanel::pipeline::{self, Config};
//!
//! let (sender, receiver) = std::sync::mpsc::sync_channel(4);
//! let producer = std::thread::spawn(move || {
//!     let config = Config::new(NonZeroUsize::new(2).unwrap());
//!     // Each unit is a "file" of `n` events, emitted in chunks of 10.
//!     let files = vec![25_u32, 7, 40];
//!     pipeline::unordered(files.into_iter(), &config, |n, emit| {
//!         let events: Vec<u32> = (0..n).collect();
//!         for chunk in events.chunks(10) {
//!             emit(chunk.to_vec());
//!         }
//!     }, |chunk| sender.send(chunk))
//! });
//! let received: usize = receiver.iter().map(|chunk| chunk.len()).sum();
//! assert!(producer.join().unwrap().is_ok());
//! assert_eq!(received, 25 + 7 + 40);
//! ```

use std::any::Any;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

/// How a pipeline runs: how many worker threads, and how much may be in
/// flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    threads: NonZeroUsize,
    max_units_in_flight: NonZeroUsize,
    max_queued_results: NonZeroUsize,
}

impl Config {
    /// `threads` workers (1 runs everything inline on the calling thread),
    /// with at most `2 × threads` units in flight and `2 × threads` results
    /// queued for the sink: enough to keep every worker busy while the
    /// calling thread reads or writes, no more.
    pub fn new(threads: NonZeroUsize) -> Config {
        const TWO: NonZeroUsize = NonZeroUsize::new(2).unwrap();
        let twice = threads.saturating_mul(TWO);
        Config {
            threads,
            max_units_in_flight: twice,
            max_queued_results: twice,
        }
    }

    /// At most this many units read from the input and not yet done with:
    /// in [`ordered`], not yet given to the sink (a result waiting for an
    /// earlier one counts); in [`unordered`], not yet finished by a worker.
    /// Below the number of threads, some threads stay idle.
    pub fn max_units_in_flight(mut self, units: NonZeroUsize) -> Config {
        self.max_units_in_flight = units;
        self
    }

    /// In [`unordered`], at most this many results emitted and not yet
    /// taken by the sink; a worker emitting more waits.
    pub fn max_queued_results(mut self, results: NonZeroUsize) -> Config {
        self.max_queued_results = results;
        self
    }

    /// The number of worker threads.
    pub fn threads(&self) -> NonZeroUsize {
        self.threads
    }
}

/// Runs `work` on every unit of `units` on `config.threads()` threads, and
/// gives each result to `sink` on the calling thread, in unit order.
///
/// Returns the sink's first error, after which no more units are read; see
/// the [module documentation](self) for memory bounds, panics and threads.
pub fn ordered<U, R, E>(
    mut units: impl Iterator<Item = U>,
    config: &Config,
    work: impl Fn(U) -> R + Sync,
    mut sink: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E>
where
    U: Send,
    R: Send,
{
    if config.threads.get() == 1 {
        for unit in units {
            sink(work(unit))?;
        }
        return Ok(());
    }
    let mut reorder = Reorder::default();
    run(
        &mut units,
        config,
        config.max_units_in_flight,
        &|unit, emit| emit(work(unit)),
        &mut |delivery| match delivery {
            Delivery::Result { seq, result } => reorder.insert(seq, result, &mut sink),
            // The unit was released when its result reached the sink.
            Delivery::Done => Ok(0),
        },
    )
}

/// Runs `work` on every unit of `units` on `config.threads()` threads; `work`
/// may emit any number of results, which `sink` gets on the calling thread
/// as they come (a unit's results in the order it emitted them, results of
/// different units interleaved).
///
/// Returns the sink's first error, after which no more units are read and
/// results still emitted are dropped; see the [module documentation](self)
/// for memory bounds, panics, threads and use from async code.
pub fn unordered<U, R, E>(
    mut units: impl Iterator<Item = U>,
    config: &Config,
    work: impl Fn(U, &mut dyn FnMut(R)) + Sync,
    mut sink: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E>
where
    U: Send,
    R: Send,
{
    if config.threads.get() == 1 {
        let mut failure = None;
        for unit in units {
            work(unit, &mut |result| {
                if failure.is_none()
                    && let Err(error) = sink(result)
                {
                    failure = Some(error);
                }
            });
            if let Some(error) = failure {
                return Err(error);
            }
        }
        return Ok(());
    }
    run(
        &mut units,
        config,
        config.max_queued_results,
        &work,
        &mut |delivery| match delivery {
            Delivery::Result { result, .. } => sink(result).map(|()| 0),
            Delivery::Done => Ok(1),
        },
    )
}

/// The work on one unit, as the core sees it: results go to the callback.
type Work<'a, U, R> = dyn Fn(U, &mut dyn FnMut(R)) + Sync + 'a;

/// What the core hands to an entry point's delivery function, which says
/// how many units it has done with (and so may be replaced by new ones).
enum Delivery<R> {
    /// A result of the unit numbered `seq` (from 0, in input order).
    Result { seq: u64, result: R },
    /// A unit's work has returned: all its results came before.
    Done,
}

/// A message from a worker to the calling thread.
enum Message<R> {
    Result { seq: u64, result: R },
    Done,
    Panicked(Box<dyn Any + Send>),
}

/// Why the calling thread stopped coordinating.
enum Stop<E> {
    Finished,
    Sink(E),
    Panicked(Box<dyn Any + Send>),
}

/// The core both entry points share: workers on scoped threads, the units
/// queue, the results channel of `results_capacity`, and the calling thread
/// coordinating. It takes its closures as `dyn`, so that it is compiled once
/// per unit and result type rather than once per closure.
fn run<U: Send, R: Send, E>(
    units: &mut dyn Iterator<Item = U>,
    config: &Config,
    results_capacity: NonZeroUsize,
    work: &Work<'_, U, R>,
    deliver: &mut dyn FnMut(Delivery<R>) -> Result<u64, E>,
) -> Result<(), E> {
    let jobs = Jobs::default();
    let (sender, receiver) = mpsc::sync_channel(results_capacity.get());
    let stop = thread::scope(|scope| {
        // Closes the queue when coordination ends, a panic of the iterator
        // or the sink included, so that no worker waits for a unit forever.
        let _close = CloseOnDrop(&jobs);
        for _ in 0..config.threads.get() {
            let sender = sender.clone();
            let jobs = &jobs;
            scope.spawn(move || worker(jobs, work, &sender));
        }
        drop(sender);
        let stop = coordinate(units, config, &jobs, &receiver, deliver);
        // Workers waiting to emit find the channel closed and drop the rest
        // of their unit's results; the scope then waits for them.
        drop(receiver);
        stop
    });
    match stop {
        Stop::Finished => Ok(()),
        Stop::Sink(error) => Err(error),
        Stop::Panicked(payload) => panic::resume_unwind(payload),
    }
}

/// The calling thread's loop: reads units while fewer than the bound are in
/// flight, then waits for the next message from a worker.
fn coordinate<U, R, E>(
    units: &mut dyn Iterator<Item = U>,
    config: &Config,
    jobs: &Jobs<U>,
    results: &Receiver<Message<R>>,
    deliver: &mut dyn FnMut(Delivery<R>) -> Result<u64, E>,
) -> Stop<E> {
    let max_in_flight = config.max_units_in_flight.get() as u64;
    let mut n_read = 0u64;
    let mut n_released = 0u64;
    let mut input_done = false;
    loop {
        while !input_done && n_read - n_released < max_in_flight {
            match units.next() {
                Some(unit) => {
                    jobs.push(n_read, unit);
                    n_read += 1;
                }
                None => input_done = true,
            }
        }
        if input_done && n_released == n_read {
            return Stop::Finished;
        }
        // Workers hold senders until the queue closes, and a worker that
        // panicked said so first: the channel cannot be disconnected here.
        let Ok(message) = results.recv() else {
            return Stop::Panicked(Box::new("a pipeline worker exited early"));
        };
        let delivered = match message {
            Message::Result { seq, result } => deliver(Delivery::Result { seq, result }),
            Message::Done => deliver(Delivery::Done),
            Message::Panicked(payload) => return Stop::Panicked(payload),
        };
        match delivered {
            Ok(n_units) => n_released += n_units,
            Err(error) => return Stop::Sink(error),
        }
    }
}

/// A worker thread: takes units until the queue closes.
fn worker<U, R>(jobs: &Jobs<U>, work: &Work<'_, U, R>, results: &SyncSender<Message<R>>) {
    while let Some((seq, unit)) = jobs.pop() {
        let mut emit = |result| {
            // Fails only once the pipeline has stopped: the result is dropped.
            let _ = results.send(Message::Result { seq, result });
        };
        let message = match panic::catch_unwind(AssertUnwindSafe(|| work(unit, &mut emit))) {
            Ok(()) => Message::Done,
            Err(payload) => Message::Panicked(payload),
        };
        let panicked = matches!(message, Message::Panicked(_));
        if results.send(message).is_err() || panicked {
            return;
        }
    }
}

/// Units waiting for a worker: a queue that can be closed, dropping what it
/// holds. Its length is bounded by the coordinator, which pushes only while
/// fewer than [`Config::max_units_in_flight`] units are in flight.
struct Jobs<U> {
    state: Mutex<JobsState<U>>,
    available: Condvar,
}

struct JobsState<U> {
    queue: VecDeque<(u64, U)>,
    closed: bool,
}

impl<U> Default for Jobs<U> {
    fn default() -> Self {
        Jobs {
            state: Mutex::new(JobsState {
                queue: VecDeque::new(),
                closed: false,
            }),
            available: Condvar::new(),
        }
    }
}

impl<U> Jobs<U> {
    fn push(&self, seq: u64, unit: U) {
        self.lock().queue.push_back((seq, unit));
        self.available.notify_one();
    }

    /// The next unit, waiting for one; `None` once the queue is closed.
    fn pop(&self) -> Option<(u64, U)> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.queue.pop_front() {
                return Some(job);
            }
            state = self
                .available
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Closes the queue and drops the units still in it, unworked.
    fn close(&self) {
        let discarded = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.queue)
        };
        self.available.notify_all();
        drop(discarded);
    }

    /// No code panics while holding the lock, so a poisoned lock still
    /// holds a consistent queue.
    fn lock(&self) -> MutexGuard<'_, JobsState<U>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct CloseOnDrop<'a, U>(&'a Jobs<U>);

impl<U> Drop for CloseOnDrop<'_, U> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Results of [`ordered`] that arrived before an earlier unit's.
struct Reorder<R> {
    /// The number of the next unit to give to the sink.
    next_seq: u64,
    /// Results of units `next_seq..`, `None` where not arrived yet; never
    /// longer than the units in flight.
    pending: VecDeque<Option<R>>,
}

impl<R> Default for Reorder<R> {
    fn default() -> Self {
        Reorder {
            next_seq: 0,
            pending: VecDeque::new(),
        }
    }
}

impl<R> Reorder<R> {
    /// Stores unit `seq`'s result, then gives the sink every result that is
    /// next in order; how many it gave.
    fn insert<E>(
        &mut self,
        seq: u64,
        result: R,
        sink: &mut impl FnMut(R) -> Result<(), E>,
    ) -> Result<u64, E> {
        let idx = usize::try_from(seq - self.next_seq).expect("bounded by the units in flight");
        if self.pending.len() <= idx {
            self.pending.resize_with(idx + 1, || None);
        }
        self.pending[idx] = Some(result);
        let mut n_released = 0;
        while let Some(slot) = self.pending.front_mut() {
            let Some(result) = slot.take() else {
                break;
            };
            self.pending.pop_front();
            self.next_seq += 1;
            n_released += 1;
            sink(result)?;
        }
        Ok(n_released)
    }
}

#[cfg(test)]
mod tests;
