//! The storage (Avro) shape: every field at the top level, custom and
//! purchase properties as a JSON-encoded string in `properties`. It must map
//! exactly like the same event in the Custom HTTP connector shape, and an
//! undecodable string is kept whole under the bare prefix.

use serde_json::{Map, Value, json};

use crate::harness::{self, envelope, transform};

const ID: &str = "e4f5a6b7-c8d9-4e0f-8a1b-2c3d4e5f6a7b";

fn custom_properties() -> Value {
    json!({
        "table_size": 4,
        "terrace": true,
        "menu": {"starter": "Caldo verde", "allergens": ["gluten", "lactose"]},
        "note": "Aniversário – bolo às 21h 🎂",
        "dropped": null
    })
}

/// A CustomEvent in the HTTP shape.
fn custom_event_http() -> Value {
    json!({
        "event_type": "users.behaviors.CustomEvent",
        "id": ID,
        "time": 1_736_600_000,
        "user": {
            "user_id": "65a1f0c2e4b0d3a9f1c27e58",
            "external_user_id": "ines.carvalho",
            "device_id": "0e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b",
            "timezone": "Europe/Lisbon"
        },
        "properties": {
            "app_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "platform": "ios",
            "os_version": "iOS 18.1",
            "device_model": "iPhone16,2",
            "name": "Reserved Table",
            "ad_id": null,
            "app_group_id": "3f2b8c1d-0e4a-4b7c-9d6e-5a1f2c3b4d5e",
            "custom_properties": custom_properties()
        }
    })
}

/// The same event, flattened as Braze's storage export writes it.
fn flatten(http: &Value, nested_key: &str, encoded: &str) -> Value {
    let mut flat = Map::new();
    for (key, value) in http.as_object().expect("an object") {
        match key.as_str() {
            "user" | "properties" => {
                for (inner_key, inner_value) in value.as_object().expect("an object") {
                    if inner_key != nested_key {
                        flat.insert(inner_key.clone(), inner_value.clone());
                    }
                }
            }
            _ => {
                flat.insert(key.clone(), value.clone());
            }
        }
    }
    flat.insert("properties".to_owned(), Value::String(encoded.to_owned()));
    Value::Object(flat)
}

fn map_one(event: &Value) -> Value {
    let res = transform(&envelope(std::slice::from_ref(event)));
    res.assert_success();
    let mut events = res.events();
    assert_eq!(
        events.len(),
        1,
        "one event maps\nrejects: {}\nstderr: {}",
        res.rejects,
        res.stderr
    );
    events.remove(0)
}

#[test]
fn custom_event_in_storage_shape_maps_like_the_http_shape() {
    let http = custom_event_http();
    let storage = flatten(&http, "custom_properties", &custom_properties().to_string());
    assert!(storage["properties"].is_string() && storage.get("user").is_none());

    let from_http = map_one(&http);
    let from_storage = map_one(&storage);
    assert_eq!(
        from_storage, from_http,
        "both shapes give the same Mixpanel event"
    );

    assert_eq!(from_http["event"], "[Braze Custom Event] Reserved Table");
    let properties = harness::assert_mixpanel_event(&from_http);
    assert_eq!(properties["distinct_id"], "ines.carvalho");
    assert_eq!(properties["$insert_id"], ID);
    assert_eq!(properties["time"], 1_736_600_000);
    assert_eq!(properties["$os"], "iOS 18.1");
    assert_eq!(properties["$device"], "iPhone16,2");
    assert_eq!(
        properties["device_id"],
        "0e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b"
    );
    assert_eq!(properties["[Custom event property] table_size"], 4);
    assert_eq!(properties["[Custom event property] terrace"], true);
    assert_eq!(
        properties["[Custom event property] menu"],
        json!({"starter": "Caldo verde", "allergens": ["gluten", "lactose"]})
    );
    assert_eq!(
        properties["[Custom event property] note"],
        "Aniversário – bolo às 21h 🎂"
    );
    for absent in [
        "[Custom event property] dropped",
        "ad_id",
        "user_id",
        "external_user_id",
        "timezone",
        "name",
        "custom_properties",
        "properties",
        "os_version",
        "device_model",
    ] {
        assert!(
            !properties.contains_key(absent),
            "{absent} must not be sent: {from_http}"
        );
    }
}

#[test]
fn purchase_in_storage_shape_maps_like_the_http_shape() {
    let purchase_properties =
        json!({"grind": "espresso", "gift": {"wrap": true, "card": "Parabéns!"}, "bag_grams": 250});
    let http = json!({
        "event_type": "users.behaviors.Purchase",
        "id": "f5a6b7c8-d9e0-4f1a-9b2c-3d4e5f6a7b8c",
        "time": 1_736_600_100,
        "user": {"user_id": "65a1f0c2e4b0d3a9f1c27e58", "external_user_id": "ines.carvalho", "device_id": "dev-9"},
        "properties": {
            "app_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "platform": "android",
            "product_id": "sku-CAFE-250g",
            "price": 12.5,
            "currency": "EUR",
            "purchase_properties": purchase_properties
        }
    });
    let storage = flatten(
        &http,
        "purchase_properties",
        &purchase_properties.to_string(),
    );
    let from_http = map_one(&http);
    assert_eq!(map_one(&storage), from_http);
    assert_eq!(from_http["event"], "Purchase");
    let properties = harness::assert_mixpanel_event(&from_http);
    assert_eq!(properties["product_id"], "sku-CAFE-250g");
    assert_eq!(properties["price"], 12.5);
    assert_eq!(properties["currency"], "EUR");
    assert_eq!(properties["[Purchase property] grind"], "espresso");
    assert_eq!(
        properties["[Purchase property] gift"],
        json!({"wrap": true, "card": "Parabéns!"})
    );
    assert_eq!(properties["[Purchase property] bag_grams"], 250);
    assert!(
        !properties
            .keys()
            .any(|key| key.starts_with("[Custom event property]"))
    );
}

#[test]
fn an_undecodable_properties_string_is_kept_whole_under_the_bare_prefix() {
    let not_json = "size=large; colour=azul {";
    let storage = flatten(&custom_event_http(), "custom_properties", not_json);
    let mapped = map_one(&storage);
    let properties = harness::assert_mixpanel_event(&mapped);
    assert_eq!(properties["[Custom event property]"], not_json);
    assert!(
        !properties
            .keys()
            .any(|key| key.starts_with("[Custom event property] ")),
        "nothing is expanded: {mapped}"
    );

    let mut purchase = flatten(&custom_event_http(), "custom_properties", "[1, 2, 3]");
    purchase["event_type"] = json!("users.behaviors.Purchase");
    purchase.as_object_mut().expect("an object").remove("name");
    let mapped = map_one(&purchase);
    assert_eq!(mapped["event"], "Purchase");
    assert_eq!(
        mapped["properties"]["[Purchase property]"], "[1, 2, 3]",
        "{mapped}"
    );
}

#[test]
fn an_encoded_string_in_the_http_shape_is_decoded_too() {
    let mut http = custom_event_http();
    http["properties"]["custom_properties"] = Value::String(custom_properties().to_string());
    assert_eq!(map_one(&http), map_one(&custom_event_http()));
}

#[test]
fn an_encoded_null_means_no_custom_properties() {
    let storage = flatten(&custom_event_http(), "custom_properties", "null");
    let mapped = map_one(&storage);
    let properties = harness::assert_mixpanel_event(&mapped);
    assert!(
        !properties
            .keys()
            .any(|key| key.starts_with("[Custom event property]")),
        "{mapped}"
    );
}
