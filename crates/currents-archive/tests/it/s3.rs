//! The scenario on S3, through moto's server: the same listing calls, the
//! same pruning, the same bytes.

use bytes::Bytes;
use currents_archive::store::ArchiveStore;

use crate::scenario;
use currents_archive::fixtures::moto::MotoServer;

#[tokio::test]
async fn an_s3_bucket_is_listed_pruned_read_and_written() {
    let Some(server) = MotoServer::start() else {
        return;
    };
    server.create_bucket("braze-currents");
    let options = server.s3_options();
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    let store = ArchiveStore::open_with_options("s3://braze-currents/currents", &options).unwrap();
    assert_eq!(store.prefix(), "currents");
    for (key, bytes) in scenario::braze_tree("currents") {
        store.put(&key, Bytes::from(bytes)).await.unwrap();
    }
    scenario::list_and_read(&store).await;
    scenario::write_and_read_batches(&store).await;

    // A bucket that does not exist is an error that names it, and no secret.
    let store = ArchiveStore::open_with_options("s3://no-such-bucket/x", &options).unwrap();
    let error = store.list(&Default::default()).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("s3://no-such-bucket/x"), "{message}");
    assert!(!message.contains("test-secret-key"), "{message}");
    let error = store.get_key("x/a.avro").await.unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
}
