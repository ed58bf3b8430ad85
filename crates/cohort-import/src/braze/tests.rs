//! Unit tests of the Braze client without the network: instances, the
//! `/users/track` body and answers, redaction, and the builder's checks.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use mixpanel_client::Secret;
use serde_json::{Value, json};

use super::error::redact;
use super::track::{read_answer, track_body};
use super::transport::HttpResponse;
use super::*;

#[test]
fn instances_parse_case_insensitively_and_map_to_rest_endpoints() {
    for text in [
        "US-03",
        "us-03",
        "us03",
        " Us_03 ",
        "rest.iad-03.braze.com",
        "https://rest.iad-03.braze.com/",
    ] {
        assert_eq!(text.parse::<Instance>(), Ok(Instance::Us03), "{text}");
    }
    assert_eq!(Instance::Us03.rest_url(), "https://rest.iad-03.braze.com");
    assert_eq!(Instance::Us10.rest_url(), "https://rest.us-10.braze.com");
    assert_eq!(Instance::Eu01.rest_url(), "https://rest.fra-01.braze.eu");
    assert_eq!(Instance::Eu02.rest_url(), "https://rest.fra-02.braze.eu");
    assert_eq!(Instance::Au01.rest_url(), "https://rest.au-01.braze.com");
    assert_eq!(Instance::Jp01.rest_url(), "https://rest.jp-01.braze.com");
    assert_eq!(Instance::Id01.rest_url(), "https://rest.id-01.braze.com");
    assert_eq!(Instance::Kr01.rest_url(), "https://rest.kr-01.braze.com");
    assert_eq!(Instance::Eu02.to_string(), "EU-02");
    assert_eq!(Instance::default(), Instance::Us01);
    for instance in Instance::ALL {
        assert_eq!(instance.to_string().parse::<Instance>(), Ok(instance));
        assert_eq!(instance.rest_url().parse::<Instance>(), Ok(instance));
    }
    let mut urls: Vec<_> = Instance::ALL
        .iter()
        .map(|instance| instance.rest_url())
        .collect();
    urls.dedup();
    assert_eq!(urls.len(), 15, "every instance has its own endpoint");

    let error = "US-09".parse::<Instance>().unwrap_err().to_string();
    assert!(error.contains("\"US-09\""), "{error}");
    assert!(
        error.contains("US-01, US-02") && error.ends_with("KR-01"),
        "{error}"
    );
    assert!("".parse::<Instance>().is_err());
}

fn update(user: BrazeUser, add: &[&str], remove: &[&str]) -> AttributeUpdate {
    AttributeUpdate {
        user,
        attribute: "mixpanel_cohorts".to_owned(),
        add: add.iter().map(|&value| value.to_owned()).collect(),
        remove: remove.iter().map(|&value| value.to_owned()).collect(),
    }
}

#[test]
fn the_track_body_leaves_out_empty_lists() {
    let body = track_body(&[
        update(BrazeUser::ExternalId("u1".into()), &["a", "b"], &[]),
        update(BrazeUser::Email("ada@example.com".into()), &[], &["c"]),
        update(BrazeUser::ExternalId("u3".into()), &["d"], &["e"]),
        update(BrazeUser::ExternalId("u4".into()), &[], &[]),
    ])
    .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"attributes": [
            {"external_id": "u1", "_update_existing_only": true, "mixpanel_cohorts": {"add": ["a", "b"]}},
            {"email": "ada@example.com", "_update_existing_only": true, "mixpanel_cohorts": {"remove": ["c"]}},
            {"external_id": "u3", "_update_existing_only": true, "mixpanel_cohorts": {"add": ["d"], "remove": ["e"]}},
            {"external_id": "u4", "_update_existing_only": true},
        ]})
    );
}

#[test]
fn the_track_body_refuses_too_many_objects_and_reserved_attribute_names() {
    let one = update(BrazeUser::ExternalId("u1".into()), &["a"], &[]);
    assert!(track_body(&vec![one.clone(); MAX_TRACK_OBJECTS]).is_ok());
    let error = track_body(&vec![one.clone(); MAX_TRACK_OBJECTS + 1]).unwrap_err();
    assert!(matches!(error, BrazeError::Config(_)), "{error:?}");
    for name in ["", "external_id", "email", "_update_existing_only"] {
        let bad = AttributeUpdate {
            attribute: name.to_owned(),
            ..one.clone()
        };
        assert!(
            matches!(track_body(&[bad]), Err(BrazeError::Config(_))),
            "{name:?}"
        );
    }
}

fn answer(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::from(body.to_owned()),
        attempts: 2,
    }
}

#[test]
fn track_answers_are_read_per_object() {
    let outcome = read_answer(
        &answer(201, r#"{"message":"success","attributes_processed":3}"#),
        3,
        &[],
    )
    .unwrap();
    assert_eq!(
        outcome,
        TrackOutcome {
            refused: vec![],
            attempts: 2
        }
    );

    let outcome = read_answer(
        &answer(
            201,
            r#"{"message":"success","attributes_processed":1,"errors":[
                {"type":"'external_id' or 'braze_id' or 'user_alias' or 'email' is required","input_array":"attributes","index":0},
                {"type":"Invalid attribute","input_array":"attributes","index":2}]}"#,
        ),
        3,
        &[],
    )
    .unwrap();
    assert_eq!(outcome.refused.len(), 2);
    assert_eq!(
        outcome.refused[1],
        RefusedObject {
            index: 2,
            message: "Invalid attribute".to_owned()
        }
    );
    assert!(outcome.refused[0].message.contains("is required"));

    for (body, why) in [
        (
            r#"{"message":"Valid data must be provided"}"#,
            "not success",
        ),
        (r#"{"attributes_processed":1}"#, "no message"),
        ("<html>gateway</html>", "not JSON"),
        (
            r#"{"message":"success","errors":[{"type":"x","index":3}]}"#,
            "index past the request",
        ),
        (r#"{"message":"success","errors":["x"]}"#, "no index"),
    ] {
        let error = read_answer(&answer(200, body), 3, &[]).unwrap_err();
        assert!(
            matches!(error, BrazeError::InvalidResponse { status: 200, .. }),
            "{why}: {error:?}"
        );
    }
}

#[test]
fn error_statuses_map_to_what_the_caller_can_do() {
    let error = answer(401, r#"{"message":"Invalid API key: x"}"#).into_error(&[]);
    assert!(error.is_auth() && !error.is_retryable(), "{error:?}");
    let error = answer(400, r#"{"message":"Max Input Length Exceeded"}"#).into_error(&[]);
    assert!(
        matches!(&error, BrazeError::Rejected { status: 400, message } if message == "Max Input Length Exceeded"),
        "{error:?}"
    );
    let mut locked = answer(423, "locked");
    locked.headers.insert("retry-after", "9".parse().unwrap());
    let error = locked.into_error(&[]);
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(9)));
    let long = "x".repeat(1000);
    let message = answer(500, &long).message(&[]);
    assert_eq!(message.chars().count(), 301, "shortened, with an ellipsis");
}

#[test]
fn secrets_are_redacted_raw_and_json_escaped_before_shortening() {
    let secret = "pk-\"quoted\"-secret";
    // Echoed inside a JSON body, the secret appears JSON-escaped.
    let echoed = format!(
        "bad body {{\"partner_api_key\":{}}}",
        serde_json::to_string(secret).unwrap()
    );
    assert!(echoed.contains(r#"pk-\"quoted"#), "{echoed}");
    let text = redact(&echoed, &[secret, ""]);
    assert_eq!(text, r#"bad body {"partner_api_key":"[redacted]"}"#);
    assert_eq!(
        redact("a pk-1 b pk-1", &["pk-1"]),
        "a [redacted] b [redacted]"
    );

    // A secret straddling the cut would leak half of itself if shortened first.
    let body = format!("{}client-secret-123456", "y".repeat(290));
    let message = answer(400, &body).message(&["client-secret-123456"]);
    assert!(!message.contains("client-se"), "{message}");
}

#[test]
fn the_client_debug_and_builder_keep_the_key_out() {
    let key = "rest-key-0f9e8d7c";
    let builder = BrazeClient::builder(Secret::new(key)).instance(Instance::Eu01);
    let client = builder.clone().build().unwrap();
    assert_eq!(client.base_url(), "https://rest.fra-01.braze.eu");
    let printed = format!("{client:?} {builder:?}");
    assert!(!printed.contains(key), "{printed}");
    let partner = PartnerCredentials {
        partner_name: "acme".to_owned(),
        partner_api_key: Secret::new("pk-secret-1"),
        client_secret: Secret::new("cs-secret-2"),
    };
    let printed = format!("{partner:?}");
    assert!(
        !printed.contains("pk-secret-1") && !printed.contains("cs-secret-2"),
        "{printed}"
    );

    let client = BrazeClient::builder(Secret::new(key))
        .base_url("http://127.0.0.1:9/braze/")
        .build()
        .unwrap();
    assert_eq!(client.base_url(), "http://127.0.0.1:9/braze");
}

#[test]
fn the_builder_refuses_configurations_that_cannot_work() {
    let builder = || BrazeClient::builder(Secret::new("key"));
    let refused = [
        BrazeClient::builder(Secret::new(" ")).build(),
        BrazeClient::builder(Secret::new("bad\nkey")).build(),
        builder().base_url("rest.iad-01.braze.com").build(),
        builder().base_url("ftp://example.com").build(),
        builder().request_timeout(std::time::Duration::ZERO).build(),
        builder()
            .rate_limit(RateLimit {
                max_requests: 0,
                window: std::time::Duration::from_secs(1),
            })
            .build(),
        builder()
            .retry(mixpanel_client::RetryParams {
                retry_ratio: -1.0,
                ..mixpanel_client::RetryParams::for_test()
            })
            .build(),
    ];
    for (case, result) in refused.into_iter().enumerate() {
        assert!(
            matches!(result, Err(BrazeError::Config(_))),
            "case {case}: {result:?}"
        );
    }
    let error = BrazeClient::builder(Secret::new("bad\nkey"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(!error.contains("bad"), "{error}");
}
