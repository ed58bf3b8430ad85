//! Values: JSON writing, and a realistic value for each schema field, chosen
//! by the field's name and then by its Avro type.

use std::fmt::Write as _;

use super::rng::Rng;
use super::vocab::{
    CUSTOM_EVENT_NAMES, DEVICES, PRODUCT_CATEGORIES, SHOP_HOSTS, STEP_NAMES, TEXTS, URL_PATHS,
    VARIATION_NAMES,
};
use super::{EventCtx, World};
use crate::{AvroType, FieldSpec};

/// Writes `text` as a JSON string.
pub(super) fn push_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `"key":` after a comma when the object already has members.
pub(super) fn push_key(out: &mut String, first: &mut bool, key: &str) {
    if !std::mem::take(first) {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
}

/// Writes a realistic value for one schema field, chosen by its name and
/// then by its Avro type.
pub(super) fn write_field(
    out: &mut String,
    rng: &mut Rng,
    world: &World,
    ctx: &EventCtx<'_>,
    field: &FieldSpec,
) {
    let user = ctx.user;
    let device = &DEVICES[user.device];
    let name = field.name;
    let text: String = match field.avro_type {
        AvroType::String => match name {
            "campaign_id" | "campaign_api_id" => ctx.campaign.id.clone(),
            "campaign_name" => ctx.campaign.name.to_owned(),
            "message_variation_id" => ctx.message_variation.id.clone(),
            "message_variation_name" => ctx.message_variation.name.to_owned(),
            "canvas_id" | "canvas_api_id" => ctx.canvas.id.clone(),
            "canvas_name" => ctx.canvas.name.to_owned(),
            "canvas_step_id" | "canvas_step_api_id" => ctx.step.id.clone(),
            "canvas_step_name" => ctx.step.name.to_owned(),
            "canvas_variation_id" | "canvas_variation_api_id" => ctx.canvas_variation.id.clone(),
            "canvas_variation_name" => ctx.canvas_variation.name.to_owned(),
            "canvas_step_message_variation_id" | "canvas_entry_id" | "next_step_id" => rng.uuid(),
            "experiment_split_name" => rng.pick(VARIATION_NAMES).to_owned(),
            "app_group_id" | "app_group_api_id" => world.app_group_id.clone(),
            "app_id" => ctx.app_id.to_owned(),
            "dispatch_id" | "send_id" | "orphaned_by_id" => rng.object_id(),
            "email_address" => user.email.clone(),
            "first_name" => user.first_name.to_owned(),
            "last_name" => user.last_name.to_owned(),
            "phone_number" | "to_phone_number" | "user_phone_number" | "channel_identifier" => {
                user.phone.clone()
            }
            "from_phone_number" | "inbound_phone_number" => {
                format!("+1{}", rng.range(2_000_000_000, 9_999_999_999))
            }
            "platform" => device.platform.to_owned(),
            "device_model" => rng.pick(device.models).to_owned(),
            "os_version" | "device_os" => rng.pick(device.os_versions).to_owned(),
            "sdk_version" => rng.pick(device.sdk_versions).to_owned(),
            "ad_id_type" => device.ad_id_type.to_owned(),
            "browser" => device.browser.to_owned(),
            "user_agent" => device.user_agent.to_owned(),
            "device_class" => device.device_class.to_owned(),
            "resolution" => rng
                .pick(&["1170x2532", "1080x2400", "1920x1080", "2048x2732"])
                .to_owned(),
            "carrier" => rng
                .pick(&["T-Mobile", "Orange F", "Vodafone.de", "Movistar", "Verizon"])
                .to_owned(),
            "country" => rng
                .pick(&["US", "FR", "DE", "ES", "BR", "JP", "GB"])
                .to_owned(),
            "language" => rng.pick(&["en", "fr", "de", "es", "pt", "ja"]).to_owned(),
            "gender" => rng.pick(&["F", "M", "O", "N"]).to_owned(),
            "dob" => format!(
                "19{}-{:02}-{:02}",
                rng.range(50, 99),
                rng.range(1, 12),
                rng.range(1, 28)
            ),
            "home_city" => rng
                .pick(&["São Paulo", "Zürich", "Lyon", "Kraków", "New York"])
                .to_owned(),
            "timezone" => user.timezone.to_owned(),
            "url" | "short_url" | "endpoint_url" => {
                let host = rng.pick(SHOP_HOSTS);
                let path = rng.pick(URL_PATHS);
                format!(
                    "{host}{path}?utm_source=braze&utm_medium=email&utm_campaign={}",
                    rng.alnum(8)
                )
            }
            "url_path" => rng.pick(URL_PATHS).to_owned(),
            "host" => "api.partner.example.com".to_owned(),
            "push_token" | "push_to_start_token" | "update_token" => user.push_token.clone(),
            "web_push_token_public_key" | "web_push_token_vapid_public_key" => rng.alnum(87),
            "web_push_token_user_auth" => rng.alnum(22),
            "push_token_state_change_type" => rng.pick(&["create", "update", "delete"]).to_owned(),
            "esp" => rng
                .pick(&["sendgrid", "sparkpost", "amazon_ses"])
                .to_owned(),
            "from_domain" => "mail.shop.example.com".to_owned(),
            "ip_pool" => rng.pick(&["marketing", "transactional"]).to_owned(),
            "sending_ip" => format!("198.51.100.{}", rng.range(1, 254)),
            "mailbox_provider" => rng
                .pick(&["Gmail", "Microsoft", "Yahoo", "Apple"])
                .to_owned(),
            "recipient_domain" => user
                .email
                .rsplit('@')
                .next()
                .unwrap_or("example.org")
                .to_owned(),
            "machine_open" => rng.pick(&["true", "false"]).to_owned(),
            "link_alias" => rng
                .pick(&["cta_button", "hero_image", "footer_unsubscribe"])
                .to_owned(),
            "link_id" => rng.alnum(12),
            "abort_type" => rng
                .pick(&["liquid_abort_message", "rate_limit", "user_not_subscribed"])
                .to_owned(),
            "retry_type"
            | "action"
            | "interaction_type"
            | "update_source"
            | "progression_type"
            | "exit_reason"
            | "state_change_source"
            | "subscription_status"
            | "channel"
            | "source"
            | "category"
            | "element_type"
            | "button_action_type"
            | "live_activity_event_type"
            | "live_activity_event_outcome"
            | "webhook_failure_source"
            | "invocation_source"
            | "abort_log"
            | "retry_log"
            | "bounce_reason"
            | "deferral_reason"
            | "provider_error_title"
            | "error"
            | "message_body"
            | "quick_reply_text"
            | "button_string"
            | "element_label"
            | "input"
            | "output"
            | "raw_response" => text_for(rng, name),
            "message_extras"
            | "custom_attributes"
            | "flow_response_json"
            | "tool_arguments"
            | "conversion_behavior" => encoded_json(rng),
            "media_id"
            | "message_id"
            | "native_line_id"
            | "line_channel_id"
            | "flow_id"
            | "feature_flag_id_name"
            | "banner_placement_id"
            | "card_id"
            | "content_card_id"
            | "button_id"
            | "catalog_id"
            | "locale_key"
            | "template_name"
            | "line_channel_name"
            | "provider_error_code"
            | "subscription_group_id"
            | "activity_id"
            | "activity_attributes_type"
            | "combination_token"
            | "bsuid"
            | "in_reply_to"
            | "from_rcs_sender"
            | "to_rcs_sender"
            | "content_optimizer_step_id"
            | "version" => named_id(rng, name),
            "product_id" => format!("SKU-{}", rng.range(10_000, 99_999)),
            "currency" => rng.pick(&["USD", "EUR", "GBP", "BRL", "JPY"]).to_owned(),
            "name" => rng.pick(CUSTOM_EVENT_NAMES).to_owned(),
            _ if name.ends_with("_id") => rng.uuid(),
            _ if name.ends_with("_name") => rng.pick(STEP_NAMES).to_owned(),
            _ => text_for(rng, name),
        },
        AvroType::Int | AvroType::Long => {
            let number = match name {
                "time_ms" => ctx.time * 1000 + rng.range(0, 999),
                _ if name.ends_with("_at") => ctx.time - rng.range(0, 90 * 86_400),
                "http_status_code" => *[200i64, 200, 201, 429, 500, 503]
                    .get(rng.below(6))
                    .unwrap_or(&200),
                "duration" | "webhook_duration" => rng.range(20, 4_000),
                "random_bucket_number" | "prev_random_bucket_number" => rng.range(0, 9_999),
                "ios_push_token_apns_gateway" => rng.range(1, 2),
                "conversion_behavior_index" => rng.range(0, 3),
                "content_length" => rng.range(200, 40_000),
                _ if name.ends_with("_tokens") => rng.range(0, 4_000),
                _ if name.ends_with("_count") => rng.range(1, 5),
                _ => rng.range(0, 1_000),
            };
            let _ = write!(out, "{number}");
            return;
        }
        AvroType::Float => {
            let number = match name {
                "latitude" => rng.range(-60_000_000, 70_000_000) as f64 / 1e6,
                "longitude" => rng.range(-180_000_000, 180_000_000) as f64 / 1e6,
                "altitude" => rng.range(0, 250_000) as f64 / 100.0,
                "price" => rng.range(99, 49_999) as f64 / 100.0,
                "duration" => rng.range(1_000, 3_600_000) as f64 / 1000.0,
                _ => rng.range(1, 5_000) as f64 / 100.0,
            };
            let _ = write!(out, "{number}");
            return;
        }
        AvroType::Boolean => {
            out.push_str(if rng.percent(30) { "true" } else { "false" });
            return;
        }
        AvroType::StringArray => {
            out.push('[');
            let count = rng.range(1, 3);
            for n in 0..count {
                if n > 0 {
                    out.push(',');
                }
                let item = if name == "media_urls" {
                    format!("https://cdn.example.com/media/{}.jpg", rng.alnum(16))
                } else {
                    rng.pick(&["user_agent", "ip_address", "link_prefetch", "timing"])
                        .to_owned()
                };
                push_str(out, &item);
            }
            out.push(']');
            return;
        }
    };
    push_str(out, &text);
}

fn text_for(rng: &mut Rng, name: &str) -> String {
    match name {
        "retry_type"
        | "action"
        | "interaction_type"
        | "update_source"
        | "progression_type"
        | "exit_reason"
        | "state_change_source"
        | "channel"
        | "source"
        | "category"
        | "element_type"
        | "button_action_type"
        | "live_activity_event_type"
        | "live_activity_event_outcome"
        | "webhook_failure_source"
        | "invocation_source" => rng
            .pick(&[
                "api",
                "sdk",
                "dashboard",
                "automatic",
                "user_action",
                "Facebook Ads",
                "email",
            ])
            .to_owned(),
        "subscription_status" => rng
            .pick(&["Subscribed", "Unsubscribed", "Opted In"])
            .to_owned(),
        _ => rng.pick(TEXTS).to_owned(),
    }
}

/// A string field that holds JSON, as `message_extras` does.
fn encoded_json(rng: &mut Rng) -> String {
    format!(
        r#"{{"promo_code":"{}","segment":"{}","score":{}}}"#,
        rng.alnum(8).to_uppercase(),
        rng.pick(&["vip", "new_users", "lapsed_90d", "fidèles"]),
        rng.range(0, 100)
    )
}

fn named_id(rng: &mut Rng, name: &str) -> String {
    let prefix = name.trim_end_matches("_id").trim_end_matches("_name");
    format!("{prefix}_{}", rng.alnum(10).to_lowercase())
}

/// The custom properties [`write_custom_properties`] draws from.
pub(super) const CUSTOM_PROPERTY_KEYS: usize = 16;

/// The purchase properties [`write_purchase_properties`] draws from.
pub(super) const PURCHASE_PROPERTY_KEYS: usize = 7;

/// Custom event properties, `count` of them (at most
/// [`CUSTOM_PROPERTY_KEYS`]), some nested; no two with the same key.
pub(super) fn write_custom_properties(out: &mut String, rng: &mut Rng, count: usize) {
    const KEYS: &[&str] = &[
        "product_id",
        "product_name",
        "category",
        "price",
        "quantity",
        "in_stock",
        "tags",
        "variant",
        "referrer",
        "search_term",
        "rating",
        "cart",
        "screen",
        "is_first_time",
        "session_count",
        "utm",
    ];
    let count = count.min(KEYS.len());
    let mut keys: Vec<&str> = KEYS.to_vec();
    // Partial Fisher–Yates: the first `count` keys are a random choice.
    for i in 0..count {
        let j = i + rng.below(keys.len() - i);
        keys.swap(i, j);
    }
    out.push('{');
    let mut first = true;
    for key in &keys[..count] {
        push_key(out, &mut first, key);
        match *key {
            "product_id" => push_str(out, &format!("SKU-{}", rng.range(10_000, 99_999))),
            "product_name" => push_str(
                out,
                rng.pick(&[
                    "Chaussures de randonnée « Alpes »",
                    "Kaffeemaschine Deluxe",
                    "Wireless Earbuds Pro 🎧",
                    "Livre : L'Étranger",
                ]),
            ),
            "category" => push_str(out, rng.pick(PRODUCT_CATEGORIES)),
            "price" => {
                let _ = write!(out, "{}", rng.range(99, 99_999) as f64 / 100.0);
            }
            "quantity" | "session_count" => {
                let _ = write!(out, "{}", rng.range(1, 12));
            }
            "in_stock" | "is_first_time" => {
                out.push_str(if rng.percent(70) { "true" } else { "false" })
            }
            "tags" => {
                let _ = write!(
                    out,
                    r#"["{}","{}"]"#,
                    rng.pick(&["soldes", "new", "bestseller", "écologique"]),
                    rng.pick(&["gift", "limited", "été"])
                );
            }
            "variant" => {
                let _ = write!(
                    out,
                    r#"{{"size":"{}","color":"{}"}}"#,
                    rng.pick(&["S", "M", "L", "42", "EU 39"]),
                    rng.pick(&["bleu marine", "Grün", "black", "rojo"])
                );
            }
            "referrer" => push_str(
                out,
                &format!("{}{}", rng.pick(SHOP_HOSTS), rng.pick(URL_PATHS)),
            ),
            "search_term" => push_str(
                out,
                rng.pick(&[
                    "chaussures été",
                    "café moulu",
                    "Geschenkidee",
                    "regalo cumpleaños 🎁",
                ]),
            ),
            "rating" => {
                let _ = write!(out, "{}", rng.range(10, 50) as f64 / 10.0);
            }
            "cart" => {
                let items = rng.range(1, 3);
                out.push_str("{\"items\":[");
                for n in 0..items {
                    if n > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        r#"{{"sku":"SKU-{}","qty":{}}}"#,
                        rng.range(10_000, 99_999),
                        rng.range(1, 4)
                    );
                }
                let _ = write!(
                    out,
                    r#"],"total":{}}}"#,
                    rng.range(500, 50_000) as f64 / 100.0
                );
            }
            "screen" => push_str(
                out,
                rng.pick(&["Home", "ProductDetail", "Checkout", "Profil"]),
            ),
            _ => {
                let _ = write!(
                    out,
                    r#"{{"source":"{}","medium":"{}","campaign":"{}"}}"#,
                    rng.pick(&["braze", "google", "newsletter"]),
                    rng.pick(&["email", "push", "cpc"]),
                    rng.pick(&["winter_sale", "soldes_hiver", "bf24"])
                );
            }
        }
    }
    out.push('}');
}

/// Purchase properties, `count` of them (at most
/// [`PURCHASE_PROPERTY_KEYS`]), one possibly nested.
pub(super) fn write_purchase_properties(out: &mut String, rng: &mut Rng, count: usize) {
    const KEYS: &[&str] = &[
        "order_id",
        "coupon",
        "gift_wrap",
        "shipping",
        "items_in_order",
        "payment_method",
        "store",
    ];
    let count = count.min(KEYS.len());
    out.push('{');
    let mut first = true;
    let start = rng.below(KEYS.len());
    for n in 0..count {
        let key = KEYS[(start + n) % KEYS.len()];
        push_key(out, &mut first, key);
        match key {
            "order_id" => push_str(out, &format!("ORD-{}", rng.range(1_000_000, 9_999_999))),
            "coupon" => push_str(out, rng.pick(&["WINTER24", "BIENVENUE10", "FREESHIP"])),
            "gift_wrap" => out.push_str(if rng.percent(20) { "true" } else { "false" }),
            "shipping" => {
                let _ = write!(
                    out,
                    r#"{{"method":"{}","cost":{},"country":"{}"}}"#,
                    rng.pick(&["standard", "express", "retrait en magasin"]),
                    rng.range(0, 1_500) as f64 / 100.0,
                    rng.pick(&["FR", "US", "DE"])
                );
            }
            "items_in_order" => {
                let _ = write!(out, "{}", rng.range(1, 8));
            }
            "payment_method" => push_str(out, rng.pick(&["card", "paypal", "apple_pay", "klarna"])),
            _ => push_str(
                out,
                rng.pick(&[
                    "Paris – Rivoli",
                    "Online",
                    "München Hbf",
                    "São Paulo Centro",
                ]),
            ),
        }
    }
    out.push('}');
}
