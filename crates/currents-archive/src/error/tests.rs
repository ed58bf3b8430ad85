//! Secrets stay out of messages.

use super::{redact, redact_url};

#[test]
fn urls_lose_user_info_and_query_strings() {
    assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
    assert_eq!(
        redact_url("https://user:secret@host.example/path?sig=abc&sv=1#frag"),
        "https://…@host.example/path?…"
    );
    assert_eq!(
        redact_url("az://container/a?sas=token"),
        "az://container/a?…"
    );
}

#[test]
fn messages_lose_the_secrets_of_every_url_they_name() {
    let message = "Error performing GET https://acct.blob.core.windows.net/c/key?sv=2022&sig=SECRET in 1s: \
        (url: \"http://u:p@127.0.0.1:9000/b?X-Amz-Signature=SECRET2\") done";
    let redacted = redact(message);
    assert!(!redacted.contains("SECRET"), "{redacted}");
    assert!(!redacted.contains("u:p@"), "{redacted}");
    assert!(
        redacted.contains("https://acct.blob.core.windows.net/c/key?…"),
        "{redacted}"
    );
    assert!(redacted.ends_with("done"));
    assert_eq!(redact("no url here"), "no url here");
    assert_eq!(redact("odd ://x?y"), "odd ://x?…");
}

#[test]
fn store_errors_are_classified() {
    use super::StoreError;

    let classify = |error: object_store::Error| {
        StoreError::from_store(error, "s3://b/p", "p/k", |detail| StoreError::Get {
            location: "s3://b/p".to_owned(),
            key: "p/k".to_owned(),
            detail,
        })
    };
    let not_found = classify(object_store::Error::NotFound {
        path: "p/k".to_owned(),
        source: "gone".into(),
    });
    assert!(matches!(not_found, StoreError::NotFound { .. }) && !not_found.is_retryable());
    let denied = classify(object_store::Error::PermissionDenied {
        path: "p/k".to_owned(),
        source: "403 at https://b.s3.amazonaws.com/p/k?X-Amz-Credential=SECRET".into(),
    });
    assert!(matches!(denied, StoreError::Denied { .. }) && !denied.is_retryable());
    assert!(!denied.to_string().contains("SECRET"), "{denied}");
    assert!(
        denied.to_string().contains("check the credentials"),
        "{denied}"
    );
    let generic = classify(object_store::Error::Generic {
        store: "S3",
        source: "connection reset".into(),
    });
    assert!(matches!(generic, StoreError::Get { .. }) && generic.is_retryable());
}
