//! The NATS spool's JetStream objects compared with the configuration,
//! creating nothing (`check-config --connect`): each of the batch stream,
//! its consumer and the dead-letter stream exists with the settings
//! [`NatsSpool::open`](super::NatsSpool::open) would check, or is missing
//! (`serve` creates it), or differs in a setting (`serve` would refuse to
//! start). The comparisons are the ones `open` makes.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream;

use super::{
    batch_stream_config, check_options, compare_consumer, compare_stream, dead_letter_prefix,
    dead_letter_stream_config, is_not_found,
};
use crate::nats::{NatsError, NatsOptions, error_chain};

/// What the server has of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectState {
    /// It exists with the configured settings.
    Matches,
    /// It does not exist; [`NatsSpool::open`](super::NatsSpool::open)
    /// creates it.
    Missing,
    /// It exists with another value of a setting; `serve` would refuse to
    /// start.
    Mismatch {
        /// The setting, in NATS's words (`replicas`, `max_bytes`, …).
        setting: String,
        /// Its value on the server.
        found: String,
        /// The value the configuration asks for.
        wanted: String,
    },
}

/// One object and what the server has of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCheck {
    /// `stream bridge-batches`, `consumer bridge-delivery of stream bridge-batches`.
    pub object: String,
    /// Whether it matches.
    pub state: ObjectState,
}

/// Compares the batch stream, the consumer and the dead-letter stream
/// `options` describe with what the server of `client` has, as
/// [`NatsSpool::open`](super::NatsSpool::open) with this `ack_wait` (the
/// delivery lease) would, without creating or changing anything. Fails
/// only when a request fails (JetStream disabled, no permission, timeout).
pub async fn check(
    client: Client,
    options: &NatsOptions,
    ack_wait: Duration,
) -> Result<Vec<ObjectCheck>, NatsError> {
    check_options(options)?;
    let api = jetstream::ContextBuilder::new()
        .timeout(options.connect_timeout)
        .build(client);
    let batch_config = batch_stream_config(options);
    let dead_letter_config =
        dead_letter_stream_config(options, &dead_letter_prefix(options), ack_wait);
    let mut checks = Vec::with_capacity(3);

    let batches = get_stream(&api, &options.stream).await?;
    let stream_object = format!("stream {}", options.stream);
    checks.push(ObjectCheck {
        object: stream_object,
        state: match &batches {
            Some(stream) => state_of(compare_stream(&stream.cached_info().config, &batch_config))?,
            None => ObjectState::Missing,
        },
    });

    let consumer_object = format!("consumer {} of stream {}", options.consumer, options.stream);
    let consumer_state = match &batches {
        None => ObjectState::Missing,
        Some(stream) => match stream.consumer_info(&options.consumer).await {
            Ok(info) => state_of(compare_consumer(
                &info.config,
                &consumer_object,
                options,
                ack_wait,
            ))?,
            Err(error) if is_not_found(&error) => ObjectState::Missing,
            Err(error) => {
                return Err(NatsError::JetStream {
                    what: format!("info of {consumer_object}"),
                    reason: error_chain(&error),
                });
            }
        },
    };
    checks.push(ObjectCheck {
        object: consumer_object,
        state: consumer_state,
    });

    let dead_letters = get_stream(&api, &options.dead_letter_stream).await?;
    checks.push(ObjectCheck {
        object: format!("stream {}", options.dead_letter_stream),
        state: match &dead_letters {
            Some(stream) => state_of(compare_stream(
                &stream.cached_info().config,
                &dead_letter_config,
            ))?,
            None => ObjectState::Missing,
        },
    });
    Ok(checks)
}

/// The stream `name`, or `None` when the server has none of that name.
async fn get_stream(
    api: &jetstream::Context,
    name: &str,
) -> Result<Option<jetstream::stream::Stream>, NatsError> {
    match api.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(NatsError::JetStream {
            what: format!("info of stream {name}"),
            reason: error_chain(&error),
        }),
    }
}

/// A comparison's result as a state; errors other than a mismatch pass.
fn state_of(compared: Result<(), NatsError>) -> Result<ObjectState, NatsError> {
    match compared {
        Ok(()) => Ok(ObjectState::Matches),
        Err(NatsError::Mismatch {
            setting,
            found,
            wanted,
            ..
        }) => Ok(ObjectState::Mismatch {
            setting: setting.to_owned(),
            found,
            wanted,
        }),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::connect;
    use crate::nats::test_server::NatsServer;
    use crate::spool::nats::NatsSpool;

    const LEASE: Duration = Duration::from_secs(600);

    fn options(server: &NatsServer) -> NatsOptions {
        let mut options = NatsOptions::new(vec![server.url()]);
        options.connect_timeout = Duration::from_secs(2);
        // Well below what JetStream can reserve on a small test disk.
        options.max_bytes = 64 << 20;
        options
    }

    fn states(checks: &[ObjectCheck]) -> Vec<(&str, &ObjectState)> {
        checks
            .iter()
            .map(|check| (check.object.as_str(), &check.state))
            .collect()
    }

    #[tokio::test]
    async fn missing_objects_are_reported_and_not_created() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let options = options(&server);
        let client = connect(&options).await.unwrap();
        for _ in 0..2 {
            let checks = check(client.clone(), &options, LEASE).await.unwrap();
            assert_eq!(
                states(&checks),
                [
                    ("stream bridge-batches", &ObjectState::Missing),
                    (
                        "consumer bridge-delivery of stream bridge-batches",
                        &ObjectState::Missing
                    ),
                    ("stream bridge-dead-letters", &ObjectState::Missing),
                ]
            );
        }
    }

    #[tokio::test]
    async fn what_the_spool_created_matches_and_each_difference_is_named() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let options = options(&server);
        let client = connect(&options).await.unwrap();
        let spool = NatsSpool::open(client.clone(), &options, LEASE)
            .await
            .unwrap();
        spool.close().await.unwrap();
        let checks = check(client.clone(), &options, LEASE).await.unwrap();
        assert!(
            checks
                .iter()
                .all(|check| check.state == ObjectState::Matches),
            "{checks:?}"
        );

        // Another lease: the consumer's ack_wait differs.
        let checks = check(client.clone(), &options, LEASE * 2).await.unwrap();
        let ObjectState::Mismatch {
            setting,
            found,
            wanted,
        } = &checks[1].state
        else {
            panic!("{checks:?}");
        };
        assert_eq!(setting, "ack_wait");
        assert_eq!(found, "600s");
        assert!(wanted.starts_with("1200s"), "{wanted}");
        assert_eq!(checks[0].state, ObjectState::Matches);

        // Another size: the batch stream's max_bytes differs.
        let mut bigger = options.clone();
        bigger.max_bytes *= 2;
        let checks = check(client, &bigger, LEASE).await.unwrap();
        assert_eq!(
            checks[0].state,
            ObjectState::Mismatch {
                setting: "max_bytes".to_owned(),
                found: options.max_bytes.to_string(),
                wanted: bigger.max_bytes.to_string(),
            }
        );
        assert_eq!(checks[2].state, ObjectState::Matches);
    }
}
