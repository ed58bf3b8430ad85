//! Tests of `dlq` over both backends: the same dead letters are stored in
//! the SQLite spool and in a NATS spool (a real `nats-server`, skipped with
//! a notice when it is not installed outside CI), then the same commands
//! run through [`dlq_cmd::execute`] on each; what they print must be the
//! same, apart from the times. The same for `dlq --cohorts` over the
//! SQLite and NATS cohort stores ([`dlq_cohorts::execute`]).

#[path = "../../bridge-server/src/nats/test_server.rs"]
mod nats_server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge_server::nats::{NatsOptions, connect};
use bridge_server::spool::nats::{NatsDeadLetterStore, NatsSpool};
use bridge_server::spool::sqlite::{DeadLetterStore, SqliteSpool, SqliteSpoolOptions};
use bridge_server::spool::{DeadLetter, DeadLetterAdmin, NewBatch, Spool};
use bytes::Bytes;
use clap::Parser;
use cohort_import::braze::BrazeUser;
use cohort_import::store::nats::NatsStore;
use cohort_import::store::sqlite::SqliteStore;
use cohort_import::store::{
    CohortKey, MembershipPage, MembershipStore, PageKind, PageMember, RefusedChange,
};

use crate::dlq_cmd::{self, DlqCommand};
use crate::dlq_cohorts::{self, CohortStore};
use nats_server::NatsServer;

const HOUR: Duration = Duration::from_secs(3600);

/// A `dlq` command line, parsed as the binary parses it.
#[derive(clap::Parser)]
struct TestCli {
    #[command(subcommand)]
    command: DlqCommand,
}

fn command(line: &str) -> DlqCommand {
    TestCli::try_parse_from(std::iter::once("dlq").chain(line.split_whitespace()))
        .unwrap_or_else(|error| panic!("{line}: {error}"))
        .command
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("bridge-dlq-test-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn letter(
    event: &str,
    reason: &str,
    event_type: Option<&str>,
    event_id: Option<&str>,
    workspace: &str,
) -> DeadLetter {
    DeadLetter {
        event: Bytes::from(event.to_owned()),
        reason: reason.to_owned(),
        detail: format!("{reason}: Mixpanel said no\nsecond line"),
        event_type: event_type.map(str::to_owned),
        event_id: event_id.map(str::to_owned),
        workspace: Some(workspace.to_owned()),
        attempts: 2,
    }
}

/// Two batches' dead letters: three JSON events of two types in two
/// workspaces, and one that is not JSON.
fn settlements() -> Vec<(&'static str, Vec<DeadLetter>)> {
    let open = "users.messages.email.Open";
    let click = "users.messages.email.Click";
    vec![
        (
            "brand-a",
            vec![
                letter(
                    r#"{"id":"e1","event_type":"users.messages.email.Open"}"#,
                    "refused_by_mixpanel",
                    Some(open),
                    Some("e1"),
                    "brand-a",
                ),
                letter("not json", "not_json", None, None, "brand-a"),
            ],
        ),
        (
            "brand-b",
            vec![
                letter(
                    r#"{"id":"e3","event_type":"users.messages.email.Click"}"#,
                    "refused_by_mixpanel",
                    Some(click),
                    Some("e3"),
                    "brand-b",
                ),
                letter(
                    r#"{"id":"e4","event_type":"users.messages.email.Open"}"#,
                    "refused_by_mixpanel",
                    Some(open),
                    Some("e4"),
                    "brand-b",
                ),
            ],
        ),
    ]
}

/// Appends one batch per settlement, leases it and settles it with its
/// dead letters, as delivery does.
async fn settle_all<S: Spool>(spool: &S) {
    for (idx, (workspace, letters)) in settlements().into_iter().enumerate() {
        let id = spool
            .append(NewBatch {
                body: Bytes::from(format!(r#"{{"events":[{{"id":"b{idx}"}}]}}"#)),
                workspace: Some(workspace.to_owned()),
                received_at_ms: 1_700_000_000_000,
            })
            .await
            .unwrap();
        let leased = spool.lease(10, HOUR).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].id, id);
        spool.settle(id, letters).await.unwrap();
    }
}

/// The commands every backend runs, in order, and what they must print.
const SCRIPT: &[&str] = &[
    "list",
    "list --json",
    "list --limit 1",
    "list --reason refused_by_mixpanel --json",
    "list --event-type users.messages.email.Open",
    "list --since 1h --until 2999-01-01T00:00:00Z --json",
    "list --since 2999-01-01T00:00:00Z",
    "show 1 3",
    "show 4 999",
    "replay",
    "purge --reason refused_by_mixpanel",
    "replay --event-type users.messages.email.Open",
    "replay --reason not_json",
    "purge --id 2 --yes",
    "list --json",
    "purge --since 1d --yes",
    "list",
];

/// Runs [`SCRIPT`] on `store`; returns what each command printed, times
/// made `<time>`.
async fn transcript<S: DeadLetterAdmin>(store: &mut S) -> String {
    let mut text = String::new();
    for line in SCRIPT {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = dlq_cmd::execute(store, command(line), &mut out, &mut err)
            .await
            .unwrap_or_else(|error| panic!("{line}: {error:#}"));
        text.push_str(&format!(
            "$ dlq {line}\n[exit {code}]\n{}[stderr]\n{}",
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap()
        ));
    }
    without_times(&text)
}

/// `text` with RFC 3339 times and `"dead_lettered_at_ms":<n>` made
/// `<time>`: the one thing that differs between two runs.
fn without_times(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("\"dead_lettered_at_ms\": ")
            && let Some(end) = after.find(|c: char| !c.is_ascii_digit())
        {
            kept.push_str("\"dead_lettered_at_ms\": <time>");
            rest = &after[end..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("\"dead_lettered_at_ms\":")
            && let Some(end) = after.find(|c: char| !c.is_ascii_digit())
        {
            kept.push_str("\"dead_lettered_at_ms\":<time>");
            rest = &after[end..];
            continue;
        }
        if let Some(len) = time_at(rest) {
            kept.push_str("<time>");
            rest = &rest[len..];
            continue;
        }
        let c = rest.chars().next().unwrap();
        kept.push(c);
        rest = &rest[c.len_utf8()..];
    }
    kept
}

/// The length of the time `2026-11-28T10:00:00Z` (or `…00.123Z`) `text`
/// starts with.
fn time_at(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if bytes.len() < shape.len() + 1 {
        return None;
    }
    for (byte, want) in bytes.iter().zip(shape) {
        let fits = match want {
            b'd' => byte.is_ascii_digit(),
            other => byte == other,
        };
        if !fits {
            return None;
        }
    }
    let mut len = shape.len();
    if bytes[len] == b'.'
        && bytes.len() >= len + 5
        && bytes[len + 1..len + 4].iter().all(u8::is_ascii_digit)
    {
        len += 4;
    }
    (bytes.get(len) == Some(&b'Z')).then_some(len + 1)
}

fn sqlite_spool(dir: &Path) -> SqliteSpool {
    SqliteSpool::open(SqliteSpoolOptions::new(dir.join("spool"), 1 << 30)).unwrap()
}

fn nats_options(server: &NatsServer) -> NatsOptions {
    let mut options = NatsOptions::new(vec![server.url()]);
    options.connect_timeout = Duration::from_secs(2);
    options.publish_timeout = Duration::from_secs(2);
    // The default 10 GiB may be more than the test machine's disk.
    options.max_bytes = 64 << 20;
    options
}

/// The replayed batches in `spool`, as (workspace, body).
async fn replayed_batches<S: Spool>(spool: &S) -> Vec<(Option<String>, String)> {
    let mut batches: Vec<(Option<String>, String)> = spool
        .lease(100, HOUR)
        .await
        .unwrap()
        .into_iter()
        .map(|leased| {
            (
                leased.batch.workspace,
                String::from_utf8(leased.batch.body.to_vec()).unwrap(),
            )
        })
        .collect();
    batches.sort();
    batches
}

#[tokio::test]
async fn dlq_prints_filters_replays_and_purges_the_same_on_sqlite_and_nats() {
    let dir = TempDir::new("spool");
    let spool = sqlite_spool(dir.path());
    settle_all(&spool).await;
    let mut store = DeadLetterStore::open(&dir.path().join("spool"), HOUR).unwrap();
    let sqlite = transcript(&mut store).await;
    let sqlite_replayed = replayed_batches(&spool).await;

    // What the script must print, on the reference store.
    let expect = |needle: &str| assert!(sqlite.contains(needle), "{needle:?} in:\n{sqlite}");
    expect(
        "$ dlq list\n[exit 0]\nID  TIME                  REASON               EVENT TYPE                  EVENT ID  ATTEMPTS  DETAIL\n1   <time>  refused_by_mixpanel  users.messages.email.Open   e1        2         refused_by_mixpanel: Mixpanel said no second line\n2   <time>  not_json             -                           -         2         not_json: Mixpanel said no second line\n",
    );
    expect("4 shown of 4 matching\n[stderr]\n$ dlq list --json\n");
    expect("1 shown of 4 matching\n[stderr]\n$ dlq list --reason");
    expect("[stderr]\n3 shown of 3 matching\n$ dlq list --event-type");
    expect("2 shown of 2 matching\n[stderr]\n$ dlq list --since 1h");
    expect("[stderr]\n4 shown of 4 matching\n$ dlq list --since <time>\n");
    expect(
        "0 shown of 0 matching\n[stderr]\n$ dlq show 1 3\n[exit 0]\n{\n  \"attempts\": 2,\n  \"batch_id\": 1,",
    );
    expect("\"event\":\"not json\",\"event_id\":null,\"event_is_json\":false,");
    expect(
        "[stderr]\nbraze-mixpanel-bridge: no dead letter 999\n$ dlq replay\n[exit 2]\n[stderr]\nbraze-mixpanel-bridge: replaying every entry needs --yes",
    );
    expect(
        "$ dlq purge --reason refused_by_mixpanel\n[exit 2]\n[stderr]\nbraze-mixpanel-bridge: purging deletes 3 matching entry(ies) for good: pass --yes\n",
    );
    expect(
        "$ dlq replay --event-type users.messages.email.Open\n[exit 0]\nreplayed 2 event(s) in 2 batch(es) into the spool\n[stderr]\n",
    );
    expect(
        "$ dlq replay --reason not_json\n[exit 0]\nreplayed 0 event(s) in 0 batch(es) into the spool\nleft 1 entry(ies) in the dead letters: their event is not JSON\n",
    );
    expect("$ dlq purge --id 2 --yes\n[exit 0]\npurged 1 entry(ies)\n");
    expect(
        "[stderr]\n1 shown of 1 matching\n$ dlq purge --since 1d --yes\n[exit 0]\npurged 1 entry(ies)\n",
    );
    assert!(
        sqlite.ends_with("$ dlq list\n[exit 0]\nID  TIME  REASON  EVENT TYPE  EVENT ID  ATTEMPTS  DETAIL\n0 shown of 0 matching\n[stderr]\n"),
        "{sqlite}"
    );
    assert_eq!(
        sqlite_replayed,
        [
            (
                Some("brand-a".to_owned()),
                r#"{"events":[{"id":"e1","event_type":"users.messages.email.Open"}]}"#.to_owned()
            ),
            (
                Some("brand-b".to_owned()),
                r#"{"events":[{"id":"e4","event_type":"users.messages.email.Open"}]}"#.to_owned()
            ),
        ]
    );

    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = nats_options(&server);
    let client = connect(&options).await.unwrap();
    let spool = NatsSpool::open(client, &options, HOUR).await.unwrap();
    settle_all(&spool).await;
    let mut store = NatsDeadLetterStore::open(connect(&options).await.unwrap(), &options)
        .await
        .unwrap();
    let nats = transcript(&mut store).await;
    assert_eq!(nats, sqlite);
    assert_eq!(replayed_batches(&spool).await, sqlite_replayed);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn dlq_on_nats_fails_clearly_when_nats_is_unreachable_or_serve_never_ran() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = NatsOptions::new(vec![format!("nats://127.0.0.1:{port}")]);
    options.connect_timeout = Duration::from_millis(500);
    let error = format!("{:#}", dlq_cmd::open_nats(&options).await.unwrap_err());
    assert!(
        error.contains("cannot connect to NATS at nats://127.0.0.1:"),
        "{error}"
    );

    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = nats_options(&server);
    let error = format!("{:#}", dlq_cmd::open_nats(&options).await.unwrap_err());
    assert_eq!(
        error,
        "the NATS spool has no stream bridge-batches and no stream bridge-dead-letters yet: start `serve` once with this configuration to create it (or check nats.stream and nats.dead_letter_stream)"
    );
    let error = format!("{:#}", dlq_cohorts::open_nats(&options).await.unwrap_err());
    assert!(
        error.starts_with("the cohort state has no NATS key-value bucket bridge-cohorts-pages, bridge-cohorts-cohorts,"),
        "{error}"
    );
    // Neither created anything: the check finds them missing still.
    let client = connect(&options).await.unwrap();
    let checks = bridge_server::spool::nats::check(client, &options, HOUR)
        .await
        .unwrap();
    assert!(
        checks
            .iter()
            .all(|check| check.state == bridge_server::spool::nats::ObjectState::Missing),
        "{checks:?}"
    );
}

fn cohort() -> CohortKey {
    CohortKey {
        project_id: "31337".to_owned(),
        cohort_id: "42".to_owned(),
    }
}

/// Adds three users to a cohort, then dead-letters their changes, as the
/// writer does when Braze refuses them.
async fn cohort_dead_letters<S: MembershipStore>(store: &S) {
    let page = MembershipPage {
        cohort: cohort(),
        cohort_name: "Power users".to_owned(),
        kind: PageKind::Add,
        session_id: "s1".to_owned(),
        page: 1,
        total_pages: Some(1),
        members: ["u1", "u2", "u3"]
            .into_iter()
            .map(|id| PageMember {
                distinct_id: id.to_owned(),
                identity: Ok(BrazeUser::ExternalId(id.to_owned())),
            })
            .collect(),
    };
    store.apply_page(page).await.unwrap();
    let changes = store.due_changes(10).await.unwrap();
    assert_eq!(changes.len(), 3);
    let refused = changes
        .into_iter()
        .enumerate()
        .map(|(idx, change)| RefusedChange {
            change,
            reason: if idx == 1 {
                "unsupported_identity"
            } else {
                "refused_by_braze"
            },
            detail: format!("Braze said no to change {idx}"),
        })
        .collect();
    store.dead_letter(refused).await.unwrap();
}

/// The commands every cohort store runs, in order.
const COHORT_SCRIPT: &[&str] = &[
    "list",
    "list --json",
    "list --reason refused_by_braze --cohort 42",
    "list --cohort 7",
    "show 2 99",
    "replay",
    "purge --reason unsupported_identity",
    "replay --reason unsupported_identity",
    "purge --since 1d --yes",
    "list",
];

async fn cohort_transcript(store: &CohortStore) -> String {
    let mut text = String::new();
    for line in COHORT_SCRIPT {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = dlq_cohorts::execute(store, command(line), &mut out, &mut err)
            .await
            .unwrap_or_else(|error| panic!("{line}: {error:#}"));
        text.push_str(&format!(
            "$ dlq --cohorts {line}\n[exit {code}]\n{}[stderr]\n{}",
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap()
        ));
    }
    without_times(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_cohorts_prints_replays_and_purges_the_same_on_sqlite_and_nats() {
    let dir = TempDir::new("cohorts");
    let sqlite = SqliteStore::open(&dir.path().join("cohorts.db")).unwrap();
    cohort_dead_letters(&sqlite).await;
    let sqlite = CohortStore::Sqlite(sqlite);
    let reference = cohort_transcript(&sqlite).await;
    let expect = |needle: &str| {
        assert!(reference.contains(needle), "{needle:?} in:\n{reference}");
    };
    expect(
        "$ dlq --cohorts list\n[exit 0]\nID  TIME                  REASON                COHORT    CHANGE  USER            ATTEMPTS  DETAIL\n",
    );
    expect(
        "1   <time>  refused_by_braze      31337/42  add     external_id:u1  1         Braze said no to change 0\n",
    );
    expect(
        "3 shown\n[stderr]\n$ dlq --cohorts list --json\n[exit 0]\n{\"attempts\":1,\"change\":\"add\",\"cohort_id\":\"42\",\"cohort_name\":\"Power users\",",
    );
    expect(
        "2 shown\n[stderr]\n$ dlq --cohorts list --cohort 7\n[exit 0]\nID  TIME  REASON  COHORT  CHANGE  USER  ATTEMPTS  DETAIL\n0 shown\n",
    );
    expect("[stderr]\nbraze-mixpanel-bridge: 1 id(s) name no cohort dead letter\n");
    expect(
        "$ dlq --cohorts replay\n[exit 2]\n[stderr]\nbraze-mixpanel-bridge: replaying every entry needs --yes",
    );
    expect(
        "pass --yes\n$ dlq --cohorts replay --reason unsupported_identity\n[exit 0]\nreplayed 1 change(s) into the cohort journal\n",
    );
    expect("$ dlq --cohorts purge --since 1d --yes\n[exit 0]\npurged 2 entry(ies)\n");
    assert!(reference.ends_with("0 shown\n[stderr]\n"), "{reference}");

    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = nats_options(&server);
    let jetstream = async_nats::jetstream::new(connect(&options).await.unwrap());
    let nats = NatsStore::open(jetstream, "bridge-cohorts", 1)
        .await
        .unwrap();
    cohort_dead_letters(&nats).await;
    // The command opens the store as `dlq --cohorts` does.
    let nats = CohortStore::Nats(dlq_cohorts::open_nats(&options).await.unwrap());
    assert_eq!(cohort_transcript(&nats).await, reference);
}
