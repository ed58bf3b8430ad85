//! Durable appends to the embedded SQLite spool: how far group commit
//! carries.
//!
//! Each append is a realistic Currents batch of 100 e-mail Click events in
//! the Custom HTTP connector shape (from `currents_model::synthetic`), about
//! 60 KB, and returns only once it is committed and the WAL fsync'd
//! (`synchronous=FULL`). Appends run from 1, 8 and 64 concurrent tasks
//! (`durable_append_60kb/<concurrency>`), as concurrent HTTP requests would. Throughput is in events (100 per batch; divide by
//! 100 for batches/s). After the run, the number of appends and of commits
//! (one WAL fsync each) per concurrency is printed to stderr, which shows how
//! many batches share an fsync.
//!
//! Each sample starts from a fresh, empty spool in the temporary directory
//! (`$TMPDIR`), so the figures depend on that file system's fsync latency.
//!
//! Run with: cargo bench -p bridge-server --bench spool

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_server::spool::sqlite::{SqliteSpool, SqliteSpoolOptions};
use bridge_server::spool::{NewBatch, Spool};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use currents_model::EventType;
use currents_model::synthetic::{Config, Generator, Mix};

/// Events per batch.
const N_EVENTS_PER_BATCH: usize = 100;

/// Concurrent appenders measured.
const CONCURRENCIES: [usize; 3] = [1, 8, 64];

/// Distinct bodies cycled through.
const N_BODIES: usize = 16;

/// Appends and commits per concurrency, over every sample.
type Counts = Mutex<BTreeMap<usize, (u64, u64)>>;

/// [`N_BODIES`] `{"events":[...]}` bodies of [`N_EVENTS_PER_BATCH`] e-mail
/// Click events from the workspace's generator, about 600 bytes each.
fn batch_bodies() -> Vec<Bytes> {
    let config = Config::new(20_240_425)
        .mix(Mix::only(EventType::MessagesEmailClick))
        .size_band(500, 700)
        .start_time(1_714_000_000);
    let mut generator = Generator::new(config);
    (0..N_BODIES)
        .map(|_| Bytes::from(generator.envelope(N_EVENTS_PER_BATCH)))
        .collect()
}

/// Appends `n_appends` batches from `concurrency` tasks to a fresh spool;
/// returns the time the appends took.
async fn run(
    bodies: Arc<Vec<Bytes>>,
    n_appends: u64,
    concurrency: usize,
    counts: &Counts,
) -> Duration {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bridge-spool-bench-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let spool = Arc::new(
        SqliteSpool::open(SqliteSpoolOptions::new(dir.clone(), u64::MAX)).expect("open the spool"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks = (0..concurrency)
        .map(|_| {
            let spool = Arc::clone(&spool);
            let next = Arc::clone(&next);
            let bodies = Arc::clone(&bodies);
            tokio::spawn(async move {
                loop {
                    let idx = next.fetch_add(1, Ordering::Relaxed);
                    if idx >= n_appends {
                        break;
                    }
                    let batch = NewBatch {
                        body: bodies[idx as usize % bodies.len()].clone(),
                        workspace: Some("brand-a".to_owned()),
                        received_at_ms: 1_714_000_000_000,
                    };
                    spool.append(batch).await.expect("append");
                }
            })
        })
        .collect::<Vec<_>>();
    for task in tasks {
        task.await.expect("append task");
    }
    let elapsed = start.elapsed();
    let n_commits = spool.n_commits();
    {
        let mut counts = counts.lock().expect("counts");
        let entry = counts.entry(concurrency).or_default();
        entry.0 += n_appends;
        entry.1 += n_commits;
    }
    spool.close().await.expect("close the spool");
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn bench_appends(criterion: &mut Criterion, counts: &Counts) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bodies = Arc::new(batch_bodies());
    let mean_bytes = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();
    let mut group = criterion.benchmark_group(format!("durable_append_{}kb", mean_bytes / 1000));
    group.throughput(Throughput::Elements(N_EVENTS_PER_BATCH as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for concurrency in CONCURRENCIES {
        group.bench_function(BenchmarkId::from_parameter(concurrency), |bencher| {
            bencher.iter_custom(|n_appends| {
                runtime.block_on(run(Arc::clone(&bodies), n_appends, concurrency, counts))
            });
        });
    }
    group.finish();
}

fn main() {
    let counts = Counts::default();
    let mut criterion = Criterion::default().configure_from_args();
    bench_appends(&mut criterion, &counts);
    criterion.final_summary();
    let counts = counts.lock().expect("counts");
    let mut stderr = std::io::stderr().lock();
    for (concurrency, (n_appends, n_commits)) in counts.iter() {
        let _ = writeln!(
            stderr,
            "concurrency {concurrency}: {n_appends} appends in {n_commits} commits (fsyncs), {:.1} appends per fsync",
            *n_appends as f64 / (*n_commits).max(1) as f64
        );
    }
}
