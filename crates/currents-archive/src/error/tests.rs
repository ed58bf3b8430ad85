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
