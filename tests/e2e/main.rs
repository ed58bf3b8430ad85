//! Workspace end-to-end tests: they run the real `braze-mixpanel-bridge`
//! binary on files and pipes and judge only what it writes (stdout, the
//! rejects file, stderr, the exit code), never its internals.
//!
//! Modules, in reading order:
//! - `harness`: finding (or building) the binary, running it, golden-file comparison;
//! - `golden`: one fixture per Currents event type against its expected outputs;
//! - `mixed`: all fixtures in one input, with conservation of events;
//! - `input_formats`: the input shapes, unreadable input and exit codes;
//! - `skip_rules`: `no_external_user_id`, `not_exported_type`, `filtered`;
//! - `invalid_events`: every invalid reason, and batches that keep going;
//! - `storage_shape`: the flat storage (Avro) shape of Currents events;
//! - `hostile`: deep nesting, huge strings, bad UTF-8, a closed stdout;
//! - `import`: `transform | import` into a wiremock Mixpanel, failures and exit codes;
//! - `serve`: the service over HTTP, dry-run, and `kill -9` under load.
//! - `serve_faults`: `serve` against a failing Mixpanel (outages, 429 storms, refusals with and without `failed_records`), a full spool, a failing spool storage, hostile and trickled bodies, a million-event body; no secret in its logs;
//! - `serve_archive`: `serve` with an archive: what it delivered is archived as received and `backfill --dry-run` reads exactly those events back; an archive that cannot be written holds delivery back; a location it cannot open stops it; `check-config --connect` opens it;
//! - `serve_limits`: slow and idle clients, the connection cap, SIGTERM with a trickling client, one serve per data dir;
//! - `tls`: serve terminating TLS, and a renewed certificate taken up without a restart;
//! - `dlq`: `dlq list|show|replay|purge` on a running dry-run `serve`, then after `kill -9`;
//! - `nats_admin`: `check-config --connect` and `dlq` (`--cohorts` too) on the NATS backend against real nats-servers, `dlq` on what a NATS-backed `serve` dead-lettered;
//! - `backfill`: Avro archives in Braze's layout into a wiremock Mixpanel: dry run against the real run, pruning, resume after `kill -9`, refusals in `dlq`, damaged files;
//! - `cohorts`: Mixpanel's cohort webhook into a Braze stand-in: sessions, diffs, faults, `kill -9`, hostile bodies, dry run, `cohorts status`.

mod harness;
mod nats_harness;

mod backfill;
mod cohorts;
mod dlq;
mod golden;
mod hostile;
mod import;
mod input_formats;
mod invalid_events;
mod mixed;
mod nats_admin;
mod serve;
mod serve_archive;
mod serve_faults;
mod serve_limits;
mod serve_nats;
mod skip_rules;
mod storage_shape;
mod tls;
