//! `serve` on NATS JetStream, end to end: real `nats-server` processes (one,
//! or a cluster of three with R3 streams), two bridge replicas taking a
//! Braze-like sender's batches in turn, a replica killed with SIGKILL, a NATS
//! node killed, all of NATS down, and the same batch sent to both replicas.
//! Mixpanel is a wiremock stand-in that records every event it imports, by
//! the Currents id its `distinct_id` carries (`cust-<id>`), with how many
//! times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::TempDir;
use crate::nats_harness::Nats;
use crate::serve::{Server, batch, events_in, get, post_batch};
use crate::serve_faults::{ids, start_async, wait_for_status};

/// How many times Mixpanel imported each event, by Currents id.
type Counted = Arc<Mutex<BTreeMap<String, u32>>>;

/// Counts the events of one `/import` request.
fn count_events(request: &Request, counted: &Counted) -> usize {
    let events = events_in(request);
    let mut counted = counted.lock().unwrap();
    for event in &events {
        let distinct_id = event["properties"]["distinct_id"].as_str().unwrap();
        let id = distinct_id.strip_prefix("cust-").unwrap_or(distinct_id);
        *counted.entry(id.to_owned()).or_default() += 1;
    }
    events.len()
}

/// An `/import` that imports everything, counting each `$insert_id`.
async fn counting_mixpanel() -> (MockServer, Counted) {
    let mixpanel = MockServer::start().await;
    let counted = Counted::default();
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let counted = Arc::clone(&counted);
            move |request: &Request| {
                let n_events = count_events(request, &counted);
                ResponseTemplate::new(200)
                    .set_body_json(json!({"code": 200, "num_records_imported": n_events}))
            }
        })
        .mount(&mixpanel)
        .await;
    (mixpanel, counted)
}

/// The environment of a replica on these NATS servers: fast retries, and a
/// 10 s lease (so a dead replica's batches move on within 10 s; the lease
/// rule holds: (2 + 1) × 2 + 2 × 1 = 8 ≤ 10).
fn replica_env(nats_urls: &str, nats_replicas: &str) -> Vec<(String, String)> {
    [
        ("BRIDGE_DELIVERY_RETRY_INITIAL_BACKOFF_SECS", "1"),
        ("BRIDGE_DELIVERY_RETRY_MAX_BACKOFF_SECS", "1"),
        ("BRIDGE_DELIVERY_MAX_RETRIES", "2"),
        ("BRIDGE_DELIVERY_REQUEST_TIMEOUT_SECS", "2"),
        ("BRIDGE_DELIVERY_LEASE_SECS", "10"),
        ("BRIDGE_SPOOL", "nats"),
        ("BRIDGE_NATS_URLS", nats_urls),
        ("BRIDGE_NATS_REPLICAS", nats_replicas),
        ("BRIDGE_NATS_PUBLISH_TIMEOUT_MS", "2000"),
        // JetStream reserves a stream's size on disk: small, so that the
        // tests' servers fit any test machine's disk together.
        ("BRIDGE_SPOOL_MAX_BYTES", "67108864"),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .to_vec()
}

async fn start_replica(
    dir: &TempDir,
    name: &str,
    mixpanel: &str,
    env: &[(String, String)],
) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_async(&dir.join(name), mixpanel, &env).await
}

/// Waits until Mixpanel imported every one of these Currents ids at least
/// once; returns what it imported.
async fn wait_imported(
    counted: &Counted,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<String, u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let snapshot = counted.lock().unwrap().clone();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|id| !snapshot.contains_key(*id))
            .collect();
        if missing.is_empty() {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never reached Mixpanel, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(address: &str, body: String) -> std::io::Result<(u16, String)> {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || post_batch(&address, &body))
        .await
        .unwrap()
}

/// Two replicas on one fresh NATS server, delivering to a counting
/// Mixpanel; `None` when nats-server is missing outside CI.
struct TwoReplicas {
    _dir: TempDir,
    _nats: Nats,
    _mixpanel: MockServer,
    counted: Counted,
    first: Server,
    second: Server,
}

async fn two_replicas(label: &str) -> Option<TwoReplicas> {
    let dir = TempDir::new(label);
    let nats = Nats::single(&dir.join("nats"))?;
    let (mixpanel, counted) = counting_mixpanel().await;
    let env = replica_env(&nats.urls(), "1");
    let first = start_replica(&dir, "a", &mixpanel.uri(), &env).await;
    let second = start_replica(&dir, "b", &mixpanel.uri(), &env).await;
    Some(TwoReplicas {
        _dir: dir,
        _nats: nats,
        _mixpanel: mixpanel,
        counted,
        first,
        second,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_nats_and_deliver_every_batch() {
    // Bound whole: a pattern with `..` would drop NATS and Mixpanel here.
    let Some(replicas) = two_replicas("nats-two-replicas").await else {
        return;
    };
    let (counted, first, second) = (&replicas.counted, &replicas.first, &replicas.second);

    let mut sent = BTreeSet::new();
    for batch_idx in 0..20 {
        let replica = if batch_idx % 2 == 0 { &first } else { &second };
        let batch_ids = ids(&format!("two-{batch_idx}"), 10);
        let (status, body) = post(&replica.address, batch(&batch_ids)).await.unwrap();
        assert_eq!(status, 200, "{body}");
        sent.extend(batch_ids);
    }
    let n_events = sent.len();
    let imported = wait_imported(counted, &sent, Duration::from_secs(60)).await;
    assert_eq!(imported.len(), n_events);
    // Both replicas delivered, and /status shows the shared consumer.
    let mut delivered = 0;
    for replica in [&first, &second] {
        let status = wait_for_status(&replica.address, Duration::from_secs(30), |status| {
            status["spool"]["batches"] == 0
        })
        .await;
        assert!(status["consumer"]["pending"].is_u64(), "{status}");
        delivered += status["delivered_events"].as_u64().unwrap();
    }
    assert_eq!(delivered, n_events as u64);
    let (_, metrics) = get(&first.address, "/metrics").unwrap();
    assert!(
        metrics.contains("bridge_spool_consumer_pending_batches 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_posted_to_both_replicas_is_delivered_once() {
    // Bound whole: a pattern with `..` would drop NATS and Mixpanel here.
    let Some(replicas) = two_replicas("nats-dedup").await else {
        return;
    };
    let (counted, first, second) = (&replicas.counted, &replicas.first, &replicas.second);

    let batch_ids = ids("dedup", 25);
    let body = batch(&batch_ids);
    for replica in [&first, &second, &first] {
        let (status, answer) = post(&replica.address, body.clone()).await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    let expected: BTreeSet<String> = batch_ids.into_iter().collect();
    let imported = wait_imported(counted, &expected, Duration::from_secs(30)).await;
    // Give a second copy every chance to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let imported_again = counted.lock().unwrap().clone();
    assert_eq!(imported, imported_again);
    assert!(imported.values().all(|count| *count == 1), "{imported:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_ingest_answers_503_and_recovers_without_a_restart() {
    let dir = TempDir::new("nats-down");
    let Some(mut nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let (mixpanel, counted) = counting_mixpanel().await;
    let env = replica_env(&nats.urls(), "1");
    let replica = start_replica(&dir, "a", &mixpanel.uri(), &env).await;
    let before = ids("before", 5);
    let (status, _) = post(&replica.address, batch(&before)).await.unwrap();
    assert_eq!(status, 200);

    nats.nodes[0].kill();
    let started = Instant::now();
    let (status, body) = post(&replica.address, batch(&ids("during", 5)))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "503 took {:?}",
        started.elapsed()
    );
    let (ready, _) = get(&replica.address, "/readyz").unwrap();
    assert_eq!(ready, 503, "/readyz while NATS is down");

    nats.nodes[0].start();
    let after = ids("after", 5);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post(&replica.address, batch(&after)).await.unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "no 200 after NATS came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The batch acknowledged before the outage and the one after it.
    let expected: BTreeSet<String> = before.into_iter().chain(after).collect();
    let imported = wait_imported(&counted, &expected, Duration::from_secs(30)).await;
    assert!(
        imported.keys().all(|id| !id.starts_with("during")),
        "a batch answered 503 was not acknowledged, so it may only arrive if NATS stored it: {imported:?}"
    );
    let (ready, _) = get(&replica.address, "/readyz").unwrap();
    assert_eq!(ready, 200);
}

/// A Braze-like sender: posts 10-event batches in turn to the replicas that
/// answer, from another thread, until told to stop; returns the ids of every
/// event in a batch answered 2xx.
fn spawn_sender(
    addresses: Vec<String>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(BTreeSet<String>, u64)> {
    std::thread::spawn(move || {
        let mut acknowledged = BTreeSet::new();
        let mut refused = 0u64;
        let mut batch_idx = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let address = &addresses[batch_idx as usize % addresses.len()];
            let batch_ids = ids(&format!("{prefix}-{batch_idx}"), 10);
            match post_batch(address, &batch(&batch_ids)) {
                Ok((status, _)) if (200..300).contains(&status) => acknowledged.extend(batch_ids),
                _ => refused += 1,
            }
            batch_idx += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (acknowledged, refused)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_acknowledged_event() {
    let dir = TempDir::new("nats-kill-replica");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    // Mixpanel answers slowly, so that the victim holds leases when it dies.
    let mixpanel = MockServer::start().await;
    let counted = Counted::default();
    let imports = Arc::new(AtomicU64::new(0));
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let counted = Arc::clone(&counted);
            let imports = Arc::clone(&imports);
            move |request: &Request| {
                imports.fetch_add(1, Ordering::Relaxed);
                let n_events = count_events(request, &counted);
                ResponseTemplate::new(200)
                    .set_delay(Duration::from_millis(300))
                    .set_body_json(json!({"code": 200, "num_records_imported": n_events}))
            }
        })
        .mount(&mixpanel)
        .await;
    let env = replica_env(&nats.urls(), "1");
    let mut victim = start_replica(&dir, "victim", &mixpanel.uri(), &env).await;
    let survivor = start_replica(&dir, "survivor", &mixpanel.uri(), &env).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(
        vec![victim.address.clone(), survivor.address.clone()],
        "kill",
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, refused) = sender.join().unwrap();
    assert!(
        acknowledged.len() >= 100,
        "{} acknowledged",
        acknowledged.len()
    );
    assert!(
        refused > 0,
        "the victim's address refused connections after the kill"
    );

    // Every acknowledged event reaches Mixpanel: the victim's leased batches
    // go to the survivor when their ack wait ends.
    wait_imported(&counted, &acknowledged, Duration::from_secs(120)).await;
    wait_for_status(&survivor.address, Duration::from_secs(120), |status| {
        status["spool"]["batches"] == 0
    })
    .await;
    assert!(imports.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nats_node_of_three_killed_under_load_loses_nothing_acknowledged() {
    let dir = TempDir::new("nats-kill-node");
    let Some(mut nats) = Nats::cluster(&dir.join("nats"), 3) else {
        return;
    };
    let (mixpanel, counted) = counting_mixpanel().await;
    let env = replica_env(&nats.urls(), "3");
    let first = start_replica(&dir, "a", &mixpanel.uri(), &env).await;
    let second = start_replica(&dir, "b", &mixpanel.uri(), &env).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(
        vec![first.address.clone(), second.address.clone()],
        "node",
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.nodes[0].kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, refused) = sender.join().unwrap();
    assert!(
        acknowledged.len() >= 200,
        "ingest went on: {} acknowledged, {refused} refused",
        acknowledged.len()
    );

    wait_imported(&counted, &acknowledged, Duration::from_secs(120)).await;
    let status: Value = wait_for_status(&first.address, Duration::from_secs(60), |status| {
        status["spool"]["batches"] == 0
    })
    .await;
    assert!(status["accepting"].as_bool().unwrap(), "{status}");
}

/// One event whose campaign name pads the batch to about `n_bytes`.
fn padded_batch(id: &str, n_bytes: usize) -> String {
    let mut event = crate::serve::event(id);
    event["properties"]["campaign_name"] = Value::String("x".repeat(n_bytes));
    json!({ "events": [event] }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_cap_follows_the_servers_max_payload() {
    let dir = TempDir::new("nats-body-cap");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let (mixpanel, counted) = counting_mixpanel().await;
    // ingest.max_body_bytes left at its default (16 MiB); nats-server's
    // default max_payload is 1 MiB, of which 1 KiB is kept for headers.
    let replica = start_replica(&dir, "a", &mixpanel.uri(), &replica_env(&nats.urls(), "1")).await;

    let too_large = padded_batch("too-large", 1_048_576);
    let (status, answer) = post(&replica.address, too_large).await.unwrap();
    assert_eq!(status, 413, "Braze splits on 413; {answer}");
    assert!(answer.contains("1047552"), "{answer}");

    let fits = padded_batch("fits", 900_000);
    assert!(fits.len() <= 1_047_552);
    let (status, answer) = post(&replica.address, fits).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let expected = BTreeSet::from(["fits".to_owned()]);
    let imported = wait_imported(&counted, &expected, Duration::from_secs(30)).await;
    assert_eq!(imported.len(), 1, "{imported:?}");
}
