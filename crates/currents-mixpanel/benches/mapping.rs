//! Throughput of the bridge's hot path against a plain `serde_json::Value`
//! round trip of the same bytes.
//!
//! The input is a deterministic, realistic stream of Braze Currents events in
//! the Custom HTTP connector shape: envelopes of 100 events (`{"events":[...]}`)
//! drawn from all 94 event types with a production-like mix (message
//! engagement, sessions and custom events frequent; rare types rare). Each
//! event is built from its type's field schema (`EventType::fields`) with
//! realistic values, and weighs 0.3–2 KB (only `users.UserDeleteRequest`,
//! whose whole schema is four short fields, comes out smaller). The stream is
//! generated here from a fixed seed, so every run measures the same bytes.
//!
//! Benchmarks (one group, `mapping`, throughput in events):
//! - `bridge`: per envelope, `Batch::parse_events` (the envelope and its
//!   events in one pass), `Mapper::map_parsed` on every event and
//!   `write_json` of every mapped event plus a newline into a reused buffer
//!   (the NDJSON body that would go to Mixpanel);
//! - `parse_map`: the same without serializing, to show what writing costs;
//! - `parse_only`: `Batch::parse_events` alone;
//! - `split_only`: `Batch::parse` alone, serde_json splitting an envelope
//!   into its raw events (a full validating scan of the envelope);
//! - `serde_json_value_roundtrip/envelope`: `serde_json::from_str::<Value>`
//!   of the envelope and `serde_json::to_writer` of the whole value;
//! - `serde_json_value_roundtrip/per_event`: the envelope parsed into a
//!   `Value`, then each event written as its own NDJSON line (the same job
//!   shape as `bridge`, with no mapping).
//!
//! One iteration processes the whole stream. Events/s are counted over every
//! input event, mapped or skipped.
//!
//! Run with: cargo xtask bench
//!
//! Set `MAPPING_BENCH_DUMP=<file>` to also write the stream there, one
//! envelope per line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use currents_mixpanel::{Mapper, MappingConfig, Outcome, OutcomeCounts};
use currents_model::{AvroType, Batch, EventType, FieldLocation, FieldSpec};
use serde_json::Value;

/// Fixed seed: the stream is the same on every run and every machine.
const SEED: u64 = 0x5EED_B2A2_E0C0_FFEE;
/// Envelopes in the stream.
const ENVELOPES: usize = 100;
/// Events per envelope, as the Custom HTTP connector batches them.
const EVENTS_PER_ENVELOPE: usize = 100;
/// Distinct users the events are drawn from.
const USERS: usize = 2_000;
/// The size band every event is kept in.
const MIN_EVENT_BYTES: usize = 300;
const MAX_EVENT_BYTES: usize = 2_000;
/// 2024-11-28T11:20:00Z, the stream's first second.
const BASE_TIME: i64 = 1_732_792_800;

// ---------------------------------------------------------------------------
// Deterministic randomness

/// xorshift64*: small, fast, and good enough to pick test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| char::from(DIGITS[self.below(16)]))
            .collect()
    }

    fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(CHARS[self.below(CHARS.len())]))
            .collect()
    }

    /// A version-4 UUID, lowercase.
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        let variant = ["8", "9", "a", "b"][self.below(4)];
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            variant,
            &h[17..20],
            &h[20..32]
        )
    }

    /// A Braze object id (24 hex digits), as `user_id` and `dispatch_id` are.
    fn object_id(&mut self) -> String {
        self.hex(24)
    }
}

// ---------------------------------------------------------------------------
// Vocabulary

const CAMPAIGN_NAMES: &[&str] = &[
    "Winter Sale 2024 – Last Chance ❄️",
    "Welcome Series #1",
    "Rappel panier abandonné 🛒",
    "Black Friday Early Access",
    "Re-engagement: We miss you 💌",
    "Wöchentlicher Newsletter – Neuigkeiten für Sie",
    "Promo été ☀️ -30 %",
    "Onboarding Day 3 – Complete your profile",
    "Price Drop Alert",
    "Cumpleaños 🎂 Descuento especial",
    "App Update 5.2 — What's new",
    "Flash Sale: 24h only ⚡",
];
const CANVAS_NAMES: &[&str] = &[
    "Onboarding Journey v3",
    "Abandoned Cart Recovery 🛒",
    "Parcours de bienvenue",
    "Lapsed User Win-back",
    "Post-purchase Cross-sell",
    "Trial → Paid Conversion",
    "Loyalty Tier Upgrade ⭐",
    "Reactivación de usuarios inactivos",
];
const STEP_NAMES: &[&str] = &[
    "Email 1 – Welcome",
    "Push: Reminder",
    "Wait 2 days",
    "Decision split: opened?",
    "In-app: Survey 📝",
    "SMS follow-up",
    "Audience Paths",
    "Message: Dernière chance",
];
const VARIATION_NAMES: &[&str] = &[
    "Variant A",
    "Variant B – emoji subject 🎉",
    "Control",
    "Variante française",
    "Variant C (short copy)",
];
const CUSTOM_EVENT_NAMES: &[&str] = &[
    "Added to Cart",
    "Viewed Product",
    "Completed Checkout",
    "Search Performed",
    "Started Free Trial",
    "Café commandé ☕",
    "Watched Video",
    "Shared Article",
    "Level Completed 🏆",
    "Profil mis à jour",
    "Wishlist Item Added",
    "Subscription Renewed",
];
const FIRST_NAMES: &[&str] = &[
    "Zoë", "José", "Ana", "Łukasz", "Søren", "Chloé", "Émile", "Ngozi", "Hiroshi", "Maëlle",
    "Oliver", "Priya",
];
const LAST_NAMES: &[&str] = &[
    "Müller",
    "García",
    "Nguyễn",
    "O'Brien",
    "Dubois",
    "Kowalski",
    "Smith",
    "Jäger",
    "Rossi",
    "Andersson",
];
const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.fr",
    "outlook.com",
    "icloud.com",
    "gmx.de",
    "example.org",
];
const TIMEZONES: &[&str] = &[
    "America/New_York",
    "Europe/Paris",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Europe/London",
    "Australia/Sydney",
    "Africa/Lagos",
    "Asia/Kolkata",
];
const TEXTS: &[&str] = &[
    "Votre commande a été expédiée 📦 — suivez-la dans l'application.",
    "¡Hola! Tu carrito te espera 🛒 y tiene un 10 % de descuento.",
    "Grüße aus München! Ihr Rabattcode gilt bis Sonntag.",
    "Reminder: your appointment is tomorrow at 10:30 ⏰",
    "Mailbox full: 552 5.2.2 recipient over quota",
    "Merci d'avoir choisi notre café ☕ — à très bientôt !",
    "Your \"Premium\" trial ends in 3 days.\nUpgrade now to keep your playlists 🎶",
    "Oferta exclusiva só hoje: frete grátis 🚚",
    "Rate limit exceeded; retrying after back-off",
    "お得なセール開催中！今すぐチェック 🎉",
];
const SHOP_HOSTS: &[&str] = &[
    "https://shop.example.com",
    "https://www.boutique-exemple.fr",
    "https://m.example.de",
    "https://app.example.io",
];
const URL_PATHS: &[&str] = &[
    "/sale/winter",
    "/p/chaussures-randonnée-42",
    "/cart",
    "/account/settings",
    "/blog/10-idées-cadeaux",
    "/checkout/confirm",
];
const PRODUCT_CATEGORIES: &[&str] = &[
    "Chaussures",
    "Electronics",
    "Küche & Haushalt",
    "Books",
    "Beauté",
    "Outdoor",
];

/// One device type: its platform, models, OS versions and user agent.
struct Device {
    platform: &'static str,
    models: &'static [&'static str],
    os_versions: &'static [&'static str],
    sdk_versions: &'static [&'static str],
    ad_id_type: &'static str,
    browser: &'static str,
    user_agent: &'static str,
    device_class: &'static str,
}

const DEVICES: &[Device] = &[
    Device {
        platform: "ios",
        models: &["iPhone15,2", "iPhone14,5", "iPhone16,1", "iPad13,4"],
        os_versions: &["iOS 17.4.1", "iOS 18.1", "iOS 16.7.8", "iPadOS 17.5"],
        sdk_versions: &["9.0.0", "8.4.0", "10.1.0"],
        ad_id_type: "ios_idfa",
        browser: "Mobile Safari",
        user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        device_class: "mobile",
    },
    Device {
        platform: "android",
        models: &["Pixel 8", "SM-S918B", "moto g54 5G", "2201116SG"],
        os_versions: &["Android 14", "Android 13", "Android 12"],
        sdk_versions: &["30.1.1", "29.0.0", "31.0.0"],
        ad_id_type: "google_ad_id",
        browser: "Chrome Mobile",
        user_agent: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        device_class: "mobile",
    },
    Device {
        platform: "web",
        models: &["Chrome", "Firefox", "Safari"],
        os_versions: &["Mac OS X 14.4", "Windows 11", "Linux"],
        sdk_versions: &["5.3.0", "5.1.1"],
        ad_id_type: "windows_ad_id",
        browser: "Chrome",
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        device_class: "desktop",
    },
];

// ---------------------------------------------------------------------------
// The workspace: campaigns, canvases, apps and users the events refer to

struct Named {
    id: String,
    name: &'static str,
}

struct Canvas {
    id: String,
    name: &'static str,
    steps: Vec<Named>,
    variations: Vec<Named>,
}

struct User {
    user_id: String,
    external_user_id: Option<String>,
    device_id: String,
    device: usize,
    timezone: &'static str,
    email: String,
    phone: String,
    first_name: &'static str,
    last_name: &'static str,
    push_token: String,
}

struct World {
    app_group_id: String,
    app_ids: Vec<String>,
    campaigns: Vec<Named>,
    message_variations: Vec<Named>,
    canvases: Vec<Canvas>,
    users: Vec<User>,
}

impl World {
    fn new(rng: &mut Rng) -> World {
        let named = |rng: &mut Rng, names: &'static [&'static str]| -> Vec<Named> {
            names
                .iter()
                .map(|name| Named {
                    id: rng.uuid(),
                    name,
                })
                .collect()
        };
        let campaigns = named(rng, CAMPAIGN_NAMES);
        let message_variations = named(rng, VARIATION_NAMES);
        let canvases = CANVAS_NAMES
            .iter()
            .map(|name| Canvas {
                id: rng.uuid(),
                name,
                steps: named(rng, STEP_NAMES),
                variations: named(rng, VARIATION_NAMES),
            })
            .collect();
        let users = (0..USERS)
            .map(|n| {
                let first_name = rng.pick(FIRST_NAMES);
                let last_name = rng.pick(LAST_NAMES);
                // About 90% of users have an external id, in a few styles.
                let external_user_id = match rng.below(10) {
                    0 => None,
                    1..=4 => Some(format!("cust-{:07}", 1_000_000 + n * 37)),
                    5..=7 => Some(rng.uuid()),
                    _ => Some(format!("usr_{}", rng.alnum(20))),
                };
                let local: String = ascii_fold(first_name)
                    .chars()
                    .chain(std::iter::once('.'))
                    .chain(ascii_fold(last_name).chars())
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect::<String>()
                    .to_lowercase();
                let device = rng.below(DEVICES.len());
                User {
                    user_id: rng.object_id(),
                    external_user_id,
                    device_id: if device == 0 {
                        rng.uuid().to_uppercase()
                    } else {
                        rng.uuid()
                    },
                    device,
                    timezone: rng.pick(TIMEZONES),
                    email: format!("{local}{}@{}", n % 100, rng.pick(EMAIL_DOMAINS)),
                    phone: format!(
                        "+{}{}",
                        rng.pick(&["1", "33", "49", "34", "44"]),
                        rng.range(600_000_000, 799_999_999)
                    ),
                    first_name,
                    last_name,
                    push_token: rng.hex(64),
                }
            })
            .collect();
        World {
            app_group_id: rng.uuid(),
            app_ids: (0..3).map(|_| rng.uuid()).collect(),
            campaigns,
            message_variations,
            canvases,
            users,
        }
    }
}

/// Strips the accents of the few letters used in names, for email addresses.
fn ascii_fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'ë' | 'é' | 'É' => 'e',
            'ł' | 'Ł' => 'l',
            'ø' => 'o',
            'ü' => 'u',
            'ä' => 'a',
            'ễ' => 'e',
            other => other,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The mix of event types

/// How often a type occurs relative to the others: message engagement,
/// sessions and custom events dominate real Currents streams.
fn weight(event_type: EventType) -> usize {
    match event_type.name() {
        "users.behaviors.CustomEvent" => 150,
        "users.behaviors.app.SessionStart" => 70,
        "users.behaviors.app.SessionEnd" => 65,
        "users.messages.email.Send" => 60,
        "users.messages.email.Delivery" => 55,
        "users.messages.email.Open" => 45,
        "users.messages.pushnotification.Send" => 50,
        "users.messages.inappmessage.Impression" => 35,
        "users.messages.contentcard.Impression" => 30,
        "users.messages.contentcard.Send" => 20,
        "users.messages.email.Click" => 15,
        "users.canvasstep.Progression" => 15,
        "users.messages.pushnotification.Open" => 12,
        "users.canvas.Entry" => 12,
        "users.behaviors.Purchase" => 10,
        "users.messages.banner.Impression" => 10,
        "users.messages.inappmessage.Click" => 8,
        "users.messages.sms.Send" => 8,
        "users.messages.sms.Delivery" => 8,
        "users.messages.contentcard.Click" => 6,
        "users.messages.sms.CarrierSend" => 6,
        "users.messages.webhook.Send" => 6,
        "users.messages.featureflag.Impression" => 5,
        "users.messages.contentcard.Dismiss" => 4,
        "users.campaigns.Conversion" => 4,
        "users.canvas.Conversion" => 4,
        "users.behaviors.Location" => 4,
        "users.messages.email.Bounce" | "users.messages.email.Unsubscribe" => 3,
        "users.messages.banner.Click" | "users.behaviors.app.FirstSession" => 3,
        "users.behaviors.subscriptiongroup.StateChange" => 3,
        "users.messages.whatsapp.Send" | "users.messages.whatsapp.Delivery" => 3,
        "users.messages.pushnotification.Bounce" | "users.messages.email.SoftBounce" => 2,
        "users.profile.Update" | "users.behaviors.pushnotification.TokenStateChange" => 2,
        _ => 1,
    }
}

/// Draws event types by weight.
struct Mix {
    types: Vec<(EventType, usize)>,
    total: usize,
}

impl Mix {
    fn new() -> Mix {
        let mut cumulative = 0;
        let types = EventType::ALL
            .iter()
            .map(|&event_type| {
                cumulative += weight(event_type);
                (event_type, cumulative)
            })
            .collect();
        Mix {
            types,
            total: cumulative,
        }
    }

    fn draw(&self, rng: &mut Rng) -> EventType {
        let ticket = rng.below(self.total);
        let idx = self.types.partition_point(|(_, upto)| *upto <= ticket);
        self.types[idx].0
    }
}

// ---------------------------------------------------------------------------
// JSON writing

fn push_str(out: &mut String, text: &str) {
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
fn push_key(out: &mut String, first: &mut bool, key: &str) {
    if !std::mem::take(first) {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
}

// ---------------------------------------------------------------------------
// One event

/// Where a message event came from: campaign and canvas fields are exclusive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Campaign,
    Canvas,
}

/// The choices shared by all fields of one event, so that they agree.
struct EventCtx<'w> {
    user: &'w User,
    origin: Origin,
    campaign: &'w Named,
    message_variation: &'w Named,
    canvas: &'w Canvas,
    step: &'w Named,
    canvas_variation: &'w Named,
    app_id: &'w str,
    time: i64,
}

fn build_event(
    rng: &mut Rng,
    world: &World,
    event_type: EventType,
    time: i64,
    optional_percent: usize,
) -> String {
    let fields = event_type.fields();
    let has_campaign = fields.iter().any(|f| f.name.starts_with("campaign_"));
    let has_canvas = fields.iter().any(|f| f.name.starts_with("canvas_"));
    let origin = match (has_campaign, has_canvas) {
        (true, true) if rng.percent(45) => Origin::Campaign,
        (true, false) => Origin::Campaign,
        _ => Origin::Canvas,
    };
    let canvas = &world.canvases[rng.below(world.canvases.len())];
    let ctx = EventCtx {
        user: &world.users[rng.below(world.users.len())],
        origin,
        campaign: &world.campaigns[rng.below(world.campaigns.len())],
        message_variation: &world.message_variations[rng.below(world.message_variations.len())],
        canvas,
        step: &canvas.steps[rng.below(canvas.steps.len())],
        canvas_variation: &canvas.variations[rng.below(canvas.variations.len())],
        app_id: &world.app_ids[rng.below(world.app_ids.len())],
        time,
    };

    let mut user = String::new();
    let mut user_first = true;
    let mut props = String::new();
    let mut props_first = true;
    let id = rng.uuid();
    for field in fields {
        match field.location {
            // `id` and `time` are written below, in Braze's order.
            FieldLocation::Top => {}
            FieldLocation::User => {
                let value = match field.name {
                    "user_id" => Some(ctx.user.user_id.clone()),
                    "external_user_id" => ctx.user.external_user_id.clone(),
                    "device_id" => rng.percent(85).then(|| ctx.user.device_id.clone()),
                    "timezone" => rng.percent(85).then(|| ctx.user.timezone.to_owned()),
                    other => Some(format!("{other}-{}", rng.alnum(8))),
                };
                if let Some(value) = value {
                    push_key(&mut user, &mut user_first, field.name);
                    push_str(&mut user, &value);
                }
            }
            FieldLocation::Properties => {
                if !field.required {
                    let excluded = match ctx.origin {
                        Origin::Campaign => {
                            field.name.starts_with("canvas_")
                                || field.name.starts_with("experiment_")
                        }
                        Origin::Canvas => {
                            field.name.starts_with("campaign_")
                                || field.name.starts_with("message_variation_")
                        }
                    };
                    if excluded || !rng.percent(optional_percent) {
                        continue;
                    }
                }
                push_key(&mut props, &mut props_first, field.name);
                if !field.required && rng.percent(4) {
                    props.push_str("null");
                } else {
                    write_field(&mut props, rng, world, &ctx, field);
                }
            }
            FieldLocation::CustomProperties => {
                push_key(&mut props, &mut props_first, "custom_properties");
                write_custom_properties(&mut props, rng);
            }
            FieldLocation::PurchaseProperties => {
                push_key(&mut props, &mut props_first, "purchase_properties");
                write_purchase_properties(&mut props, rng);
            }
            _ => {}
        }
    }

    let mut out = String::with_capacity(1024);
    out.push_str("{\"event_type\":");
    push_str(&mut out, event_type.name());
    out.push_str(",\"id\":");
    push_str(&mut out, &id);
    let _ = write!(
        out,
        ",\"time\":{time},\"user\":{{{user}}},\"properties\":{{{props}}}}}"
    );
    out
}

/// Writes a realistic value for one schema field, chosen by its name and
/// then by its Avro type.
fn write_field(
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
        _ => {
            out.push_str("null");
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

/// 3–10 custom event properties, some nested.
fn write_custom_properties(out: &mut String, rng: &mut Rng) {
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
    let count = rng.range(3, 10) as usize;
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

/// 2–6 purchase properties, one possibly nested.
fn write_purchase_properties(out: &mut String, rng: &mut Rng) {
    const KEYS: &[&str] = &[
        "order_id",
        "coupon",
        "gift_wrap",
        "shipping",
        "items_in_order",
        "payment_method",
        "store",
    ];
    let count = rng.range(2, 6) as usize;
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

// ---------------------------------------------------------------------------
// The stream

struct Stream {
    envelopes: Vec<String>,
    event_sizes: Vec<usize>,
    type_counts: Vec<usize>,
    /// Types whose every field together still makes less than
    /// `MIN_EVENT_BYTES` (e.g. `users.UserDeleteRequest`), with their counts.
    undersized: BTreeMap<&'static str, usize>,
}

impl Stream {
    fn events(&self) -> usize {
        self.event_sizes.len()
    }

    fn bytes(&self) -> usize {
        self.envelopes.iter().map(String::len).sum()
    }
}

fn build_stream() -> Stream {
    let mut rng = Rng::new(SEED);
    let world = World::new(&mut rng);
    let mix = Mix::new();
    let mut envelopes = Vec::with_capacity(ENVELOPES);
    let mut event_sizes = Vec::with_capacity(ENVELOPES * EVENTS_PER_ENVELOPE);
    let mut type_counts = vec![0; EventType::ALL.len()];
    let mut undersized = BTreeMap::new();
    let mut time = BASE_TIME;
    for _ in 0..ENVELOPES {
        let mut body = String::with_capacity(EVENTS_PER_ENVELOPE * 1024);
        body.push_str("{\"events\":[");
        for n in 0..EVENTS_PER_ENVELOPE {
            time += rng.range(0, 2);
            let event_type = mix.draw(&mut rng);
            // Redraw the optional fields until the event is in the size band;
            // fewer optional fields when it is too big, all when too small.
            let mut optional_percent = 80;
            let mut event = build_event(&mut rng, &world, event_type, time, optional_percent);
            for _ in 0..20 {
                if event.len() > MAX_EVENT_BYTES {
                    optional_percent = optional_percent.saturating_sub(10);
                } else if event.len() < MIN_EVENT_BYTES {
                    optional_percent = 100;
                } else {
                    break;
                }
                event = build_event(&mut rng, &world, event_type, time, optional_percent);
            }
            if event.len() < MIN_EVENT_BYTES {
                *undersized.entry(event_type.name()).or_insert(0) += 1;
            }
            if n > 0 {
                body.push(',');
            }
            body.push_str(&event);
            event_sizes.push(event.len());
            let idx = EventType::ALL
                .iter()
                .position(|t| *t == event_type)
                .expect("drawn from ALL");
            type_counts[idx] += 1;
        }
        body.push_str("]}");
        envelopes.push(body);
    }
    Stream {
        envelopes,
        event_sizes,
        type_counts,
        undersized,
    }
}

// ---------------------------------------------------------------------------
// The work measured

/// Parse, map and serialize one envelope; returns how many events were mapped.
fn bridge_envelope(mapper: &Mapper, body: &str, out: &mut Vec<u8>) -> usize {
    out.clear();
    let events = Batch::parse_events(body).expect("the stream holds valid envelopes");
    let mut mapped = 0;
    for parsed in events {
        if let Outcome::Mapped(event) = mapper.map_parsed(parsed.event) {
            event.write_json(out);
            out.push(b'\n');
            mapped += 1;
        }
    }
    mapped
}

fn project_token() -> MappingConfig {
    MappingConfig {
        project_token: Some("3f0c2b9e5d7a41c8b6e2f9a0d4c1b7e5".to_owned()),
        ..MappingConfig::default()
    }
}

/// Prints what the stream is made of and checks it is what the issue asks for.
#[allow(clippy::print_stdout)]
fn describe(stream: &Stream, mapper: &Mapper) {
    let mut sizes = stream.event_sizes.clone();
    sizes.sort_unstable();
    let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q).round() as usize];
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    let types_present = stream.type_counts.iter().filter(|c| **c > 0).count();

    let mut counts = OutcomeCounts::default();
    let mut out_bytes = 0;
    let mut buf = Vec::new();
    for body in &stream.envelopes {
        for parsed in Batch::parse_events(body).expect("valid envelope") {
            counts.record(&mapper.map_parsed(parsed.event));
        }
        bridge_envelope(mapper, body, &mut buf);
        out_bytes += buf.len();
    }
    let undersized: usize = stream.undersized.values().sum();

    println!(
        "stream: {} envelopes x {} events = {} events, {:.2} MB of JSON, {} of {} event types",
        stream.envelopes.len(),
        EVENTS_PER_ENVELOPE,
        stream.events(),
        stream.bytes() as f64 / 1e6,
        types_present,
        EventType::ALL.len()
    );
    println!(
        "event size (bytes): min {} / p1 {} / p10 {} / median {} / p90 {} / p99 {} / max {} / mean {:.0}",
        sizes[0],
        at(0.01),
        at(0.10),
        at(0.50),
        at(0.90),
        at(0.99),
        sizes[sizes.len() - 1],
        mean
    );
    println!(
        "below {MIN_EVENT_BYTES} bytes even with every schema field: {undersized} events ({:?})",
        stream.undersized
    );
    let skipped: Vec<String> = counts
        .skipped_by_reason()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    println!(
        "outcomes: {} mapped, {} skipped ({}), {} invalid; NDJSON out {:.2} MB",
        counts.mapped,
        counts.total_skipped(),
        skipped.join(", "),
        counts.total_invalid(),
        out_bytes as f64 / 1e6
    );
    assert_eq!(
        types_present,
        EventType::ALL.len(),
        "every event type occurs"
    );
    assert_eq!(
        counts.total_invalid(),
        0,
        "the stream holds only valid events"
    );
    assert!(
        sizes[sizes.len() - 1] <= MAX_EVENT_BYTES,
        "events stay within {MAX_EVENT_BYTES} bytes"
    );
    assert!(
        undersized * 100 <= stream.events(),
        "at most 1% of events (types with tiny schemas) are under {MIN_EVENT_BYTES} bytes"
    );
}

fn bench_mapping(c: &mut Criterion) {
    let stream = build_stream();
    let mapper = Mapper::new(project_token());
    describe(&stream, &mapper);
    if let Some(path) = std::env::var_os("MAPPING_BENCH_DUMP") {
        // One envelope per line, e.g. to feed `braze-mixpanel-bridge transform`.
        let lines: Vec<&str> = stream.envelopes.iter().map(String::as_str).collect();
        std::fs::write(&path, lines.join("\n") + "\n").expect("MAPPING_BENCH_DUMP is writable");
    }

    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::ElementsAndBytes {
        elements: stream.events() as u64,
        bytes: stream.bytes() as u64,
    });
    let mut out = Vec::with_capacity(EVENTS_PER_ENVELOPE * 2048);

    group.bench_function("bridge", |b| {
        b.iter(|| {
            let mut mapped = 0;
            for body in &stream.envelopes {
                mapped += bridge_envelope(&mapper, black_box(body), &mut out);
                black_box(&out);
            }
            mapped
        })
    });

    group.bench_function("parse_map", |b| {
        b.iter(|| {
            let mut mapped = 0;
            for body in &stream.envelopes {
                let events = Batch::parse_events(black_box(body)).expect("valid envelope");
                for parsed in events {
                    if let Outcome::Mapped(event) = mapper.map_parsed(parsed.event) {
                        black_box(&event);
                        mapped += 1;
                    }
                }
            }
            mapped
        })
    });

    group.bench_function("parse_only", |b| {
        b.iter(|| {
            let mut parsed = 0;
            for body in &stream.envelopes {
                let events = Batch::parse_events(black_box(body)).expect("valid envelope");
                for item in events {
                    let event = item.event.expect("valid event");
                    black_box(&event);
                    parsed += 1;
                }
            }
            parsed
        })
    });

    group.bench_function("split_only", |b| {
        b.iter(|| {
            let mut split = 0;
            for body in &stream.envelopes {
                split += Batch::parse(black_box(body))
                    .expect("valid envelope")
                    .events
                    .len();
            }
            split
        })
    });

    group.bench_function("serde_json_value_roundtrip/envelope", |b| {
        b.iter(|| {
            for body in &stream.envelopes {
                out.clear();
                let value: Value = serde_json::from_str(black_box(body)).expect("valid JSON");
                serde_json::to_writer(&mut out, &value).expect("writing to a Vec cannot fail");
                black_box(&out);
            }
        })
    });

    group.bench_function("serde_json_value_roundtrip/per_event", |b| {
        b.iter(|| {
            for body in &stream.envelopes {
                out.clear();
                let value: Value = serde_json::from_str(black_box(body)).expect("valid JSON");
                for event in value["events"].as_array().expect("an events array") {
                    serde_json::to_writer(&mut out, event).expect("writing to a Vec cannot fail");
                    out.push(b'\n');
                }
                black_box(&out);
            }
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    // One iteration is the whole stream (10,000 events, tens of ms), so fewer,
    // longer samples than criterion's default.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = bench_mapping
}
criterion_main!(benches);
