//! Synthetic Currents events for benchmarks, load tools and tests (feature
//! `synthetic`, off by default).
//!
//! A [`Generator`] writes realistic events of any [`EventType`] in the Custom
//! HTTP connector shape (`event_type`, `id`, `time`, `user{}`,
//! `properties{}`), one at a time or as `{"events":[...]}` envelopes. Each
//! event is built from its type's field schema ([`EventType::fields`]):
//!
//! - required fields always, optional ones [`Config::optional_fields`] percent
//!   of the time (a few of those as `null`: [`Config::null_fields`]);
//!   campaign fields or canvas fields, not both;
//! - values chosen by field name, then by Avro type: UUIDs, 24-hex Braze ids,
//!   UNIX seconds (milliseconds for `time_ms`), campaign and canvas names
//!   with accents and emoji, e-mail addresses, phone numbers, URLs with UTM
//!   parameters, user agents, UTF-8 message texts (French, German, Spanish,
//!   Japanese, emoji, an escaped quote and newline), JSON-encoded strings
//!   (`message_extras`), numbers and booleans, string arrays;
//! - the user drawn from a pool of [`Config::users`], each with a stable
//!   Braze id, device, time zone, e-mail and phone, and an external id for
//!   [`Config::external_ids`] percent of them;
//! - custom events with [`Config::custom_properties`] custom properties and
//!   purchases with [`Config::purchase_properties`] purchase properties, some
//!   nested;
//! - kept within a [`Config::size_band`] by drawing the optional fields again
//!   (fewer when too big, more when too small), and optionally padded up to
//!   it ([`Config::padding`]).
//!
//! Types are drawn from a weighted [`Mix`]: [`Mix::production`] (all 94
//! types, with message engagement, sessions and custom events frequent as
//! in a production stream), [`Mix::only`] or [`Mix::weighted`].
//!
//! The output depends on the [`Config`] alone: a splitmix64 generator inside
//! (no dependency), seeded by [`Config::new`], gives the same bytes on
//! every machine and every run. Changing what this module writes changes
//! every benchmark's input, so the figures in the workspace's
//! `docs/benchmarks.md` must then be taken again.
//!
//! # Example
//!
//! ```
//! use currents_model::synthetic::{Config, Generator, Mix};
//! use currents_model::{Batch, EventType, EventTypeName};
//!
//! let config = Config::new(42)
//!     .mix(Mix::only(EventType::MessagesEmailClick))
//!     .users(100)
//!     .size_band(300, 2_000);
//! let body = Generator::new(config.clone()).envelope(10);
//! assert_eq!(body, Generator::new(config).envelope(10), "deterministic");
//!
//! for parsed in Batch::parse_events(&body)? {
//!     let event = parsed.event?;
//!     assert_eq!(event.event_type, EventTypeName::Known(EventType::MessagesEmailClick));
//!     assert!(event.user.user_id.is_some());
//!     assert!((300..=2_000).contains(&parsed.raw.len()));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::Write as _;
use std::ops::{Range, RangeInclusive};

use crate::{EventType, FieldLocation};

use self::rng::{Rng, mix64};
use self::values::{
    CUSTOM_PROPERTY_KEYS, PURCHASE_PROPERTY_KEYS, push_key, push_str, write_custom_properties,
    write_field, write_purchase_properties,
};
use self::vocab::{
    CAMPAIGN_NAMES, CANVAS_NAMES, DEVICES, EMAIL_DOMAINS, FIRST_NAMES, LAST_NAMES, STEP_NAMES,
    TIMEZONES, VARIATION_NAMES,
};

mod rng;
mod values;
mod vocab;

#[cfg(test)]
mod tests;

/// Redraws of an event's optional fields to bring it into the size band.
const SIZE_TRIES: usize = 20;

// ---------------------------------------------------------------------------
// Configuration

/// What a [`Generator`] writes. Every knob has a default; start from
/// [`Config::new`] and change what you need.
///
/// The defaults are those of the mapping benchmark's stream: 2,000 users,
/// 90 % with an external id, optional fields 80 % of the time (4 % of them
/// `null`), 3–10 custom and 2–6 purchase properties, events of 300–2,000
/// bytes, the [`Mix::production`] mix, starting at 2024-11-28T11:20:00Z.
#[derive(Debug, Clone)]
pub struct Config {
    seed: u64,
    users: usize,
    external_id_percent: u8,
    optional_percent: u8,
    null_percent: u8,
    size_band: Option<(usize, usize)>,
    padding: bool,
    custom_properties: (usize, usize),
    purchase_properties: (usize, usize),
    start_time: i64,
    mix: Mix,
}

impl Config {
    /// The defaults, with this seed: the same seed and knobs give the same
    /// events everywhere.
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            users: 2_000,
            external_id_percent: 90,
            optional_percent: 80,
            null_percent: 4,
            size_band: Some((300, 2_000)),
            padding: false,
            custom_properties: (3, 10),
            purchase_properties: (2, 6),
            start_time: 1_732_792_800,
            mix: Mix::production(),
        }
    }

    /// How many distinct users the events are drawn from (at least 1). A
    /// user is derived from the seed and its number when an event needs it,
    /// so a large pool costs no memory.
    pub fn users(mut self, users: usize) -> Config {
        self.users = users.max(1);
        self
    }

    /// The share of users with an `external_user_id`, in percent (at most
    /// 100). The others are anonymous, which the Mixpanel mapping skips.
    pub fn external_ids(mut self, percent: u8) -> Config {
        self.external_id_percent = percent.min(100);
        self
    }

    /// How often an optional field of the schema is written, in percent (at
    /// most 100); the size band may raise or lower it for one event.
    pub fn optional_fields(mut self, percent: u8) -> Config {
        self.optional_percent = percent.min(100);
        self
    }

    /// How often a written optional field is `null`, in percent (at most 100).
    pub fn null_fields(mut self, percent: u8) -> Config {
        self.null_percent = percent.min(100);
        self
    }

    /// Keeps each event's JSON text within `min..=max` bytes: an event
    /// outside is drawn again (up to 20 times) with fewer optional fields
    /// when too big, more when too small. A type whose whole schema
    /// is smaller than `min` (`users.UserDeleteRequest` is about 220 bytes)
    /// stays below it unless [`Config::padding`] is on; see
    /// [`Generated::in_band`].
    ///
    /// # Panics
    ///
    /// If `min > max`.
    pub fn size_band(mut self, min: usize, max: usize) -> Config {
        assert!(min <= max, "size band {min}..={max} is empty");
        self.size_band = Some((min, max));
        self
    }

    /// No size band: events come out however large their fields make them.
    pub fn any_size(mut self) -> Config {
        self.size_band = None;
        self
    }

    /// Whether an event still below the size band's minimum is padded up to
    /// it with small extra properties, `"0":1,"1":1,…`: in its custom
    /// properties (custom events), its purchase properties (purchases) or
    /// its `properties` (other types). Off by default. With few custom
    /// properties and a large band this makes the costliest custom events to
    /// map: the mapping writes each key with a 24-byte prefix.
    pub fn padding(mut self, on: bool) -> Config {
        self.padding = on;
        self
    }

    /// How many custom properties a custom event carries, drawn uniformly
    /// from `range` (at most 16, the keys the generator knows; padding adds
    /// more).
    pub fn custom_properties(mut self, range: RangeInclusive<usize>) -> Config {
        self.custom_properties = clamp_range(range, CUSTOM_PROPERTY_KEYS);
        self
    }

    /// How many purchase properties a purchase carries, drawn uniformly from
    /// `range` (at most 7, the keys the generator knows).
    pub fn purchase_properties(mut self, range: RangeInclusive<usize>) -> Config {
        self.purchase_properties = clamp_range(range, PURCHASE_PROPERTY_KEYS);
        self
    }

    /// The first event's `time` (UNIX seconds); each next one is 0–2 s later.
    pub fn start_time(mut self, unix_seconds: i64) -> Config {
        self.start_time = unix_seconds;
        self
    }

    /// The event types drawn and how often.
    pub fn mix(mut self, mix: Mix) -> Config {
        self.mix = mix;
        self
    }
}

fn clamp_range(range: RangeInclusive<usize>, most: usize) -> (usize, usize) {
    let high = (*range.end()).min(most);
    ((*range.start()).min(high), high)
}

/// Which event types a [`Generator`] draws, with their relative weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// Each type with a weight, and the running total up to it.
    cumulative: Vec<(EventType, u64)>,
    total: u64,
}

impl Mix {
    /// All 94 types, weighted as in a production stream: custom events,
    /// session start and end, e-mail send, delivery and open, push sends,
    /// in-app and content card impressions make most of it; rare types have
    /// weight 1 (about 1 event in 1,000 each).
    pub fn production() -> Mix {
        let weights: Vec<(EventType, u32)> = EventType::ALL
            .iter()
            .map(|&event_type| (event_type, production_weight(event_type)))
            .collect();
        Mix::weighted(&weights)
    }

    /// All 94 types, equally often.
    pub fn uniform() -> Mix {
        let weights: Vec<(EventType, u32)> = EventType::ALL.iter().map(|&t| (t, 1)).collect();
        Mix::weighted(&weights)
    }

    /// One type only.
    pub fn only(event_type: EventType) -> Mix {
        Mix::weighted(&[(event_type, 1)])
    }

    /// These types with these relative weights; a type may be listed more
    /// than once (its weights add up) and a weight may be 0.
    ///
    /// # Panics
    ///
    /// If the weights add up to 0.
    pub fn weighted(weights: &[(EventType, u32)]) -> Mix {
        let mut total = 0;
        let cumulative = weights
            .iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|&(event_type, weight)| {
                total += u64::from(weight);
                (event_type, total)
            })
            .collect();
        assert!(total > 0, "a mix needs a type with a positive weight");
        Mix { cumulative, total }
    }

    fn draw(&self, rng: &mut Rng) -> EventType {
        let ticket = rng.next_u64() % self.total;
        let idx = self.cumulative.partition_point(|(_, upto)| *upto <= ticket);
        self.cumulative[idx].0
    }
}

/// How often a type occurs in [`Mix::production`], relative to the others.
fn production_weight(event_type: EventType) -> u32 {
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

// ---------------------------------------------------------------------------
// The generator

/// Where one generated event is in the text it was written to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Generated {
    /// Its type.
    pub event_type: EventType,
    /// The byte range of the whole event (`{...}`).
    pub span: Range<usize>,
    /// The byte range of its `id`'s value, a lowercase UUID (36 bytes,
    /// without the quotes), e.g. to rewrite it so that every event sent is
    /// unique.
    pub id: Range<usize>,
    /// Whether its size is within the [`Config::size_band`] (always, without
    /// a band).
    pub in_band: bool,
}

/// Writes synthetic Currents events; see the [module documentation](self).
///
/// It is also an endless [`Iterator`] of events, each a `String`.
#[derive(Debug, Clone)]
pub struct Generator {
    config: Config,
    rng: Rng,
    world: World,
    /// The next event's `time`, before its 0–2 s step.
    time: i64,
}

impl Generator {
    /// A generator of events as `config` says.
    pub fn new(config: Config) -> Generator {
        let mut rng = Rng::new(config.seed);
        let world = World::new(&mut rng, &config);
        Generator {
            time: config.start_time,
            config,
            rng,
            world,
        }
    }

    /// Appends the next event, its type drawn from the mix, to `out`.
    pub fn write_event(&mut self, out: &mut String) -> Generated {
        self.time += self.rng.range(0, 2);
        let event_type = self.config.mix.draw(&mut self.rng);
        self.write(event_type, out)
    }

    /// Appends the next event, of `event_type` whatever the mix, to `out`.
    pub fn write_event_of(&mut self, event_type: EventType, out: &mut String) -> Generated {
        self.time += self.rng.range(0, 2);
        self.write(event_type, out)
    }

    /// Appends an envelope of `events` events, `{"events":[...]}`, to `out`;
    /// where each event is.
    pub fn write_envelope(&mut self, events: usize, out: &mut String) -> Vec<Generated> {
        out.push_str("{\"events\":[");
        let generated = (0..events)
            .map(|n| {
                if n > 0 {
                    out.push(',');
                }
                self.write_event(out)
            })
            .collect();
        out.push_str("]}");
        generated
    }

    /// An envelope of `events` events, `{"events":[...]}`.
    pub fn envelope(&mut self, events: usize) -> String {
        let mut out = String::with_capacity(events * 1024 + 16);
        self.write_envelope(events, &mut out);
        out
    }

    /// Writes one event of `event_type`, within the size band if it can.
    fn write(&mut self, event_type: EventType, out: &mut String) -> Generated {
        let mut optional_percent = self.config.optional_percent;
        let mut event = self.build(event_type, optional_percent);
        let mut in_band = true;
        if let Some((min, max)) = self.config.size_band {
            // Bisect the share of optional fields: values vary in length, so
            // each try is a new draw, but the share moves towards the band.
            let (mut low, mut high) = (0, 100);
            for _ in 0..SIZE_TRIES {
                if event.text.len() > max {
                    high = optional_percent;
                    optional_percent = low + (optional_percent - low) / 2;
                } else if event.text.len() < min {
                    low = optional_percent;
                    optional_percent += (high - optional_percent).div_ceil(2);
                } else {
                    break;
                }
                event = self.build(event_type, optional_percent);
            }
            if event.text.len() < min && self.config.padding {
                event.pad_to(min);
            }
            in_band = (min..=max).contains(&event.text.len());
        }
        let start = out.len();
        out.push_str(&event.text);
        Generated {
            event_type,
            span: start..out.len(),
            id: start + event.id.start..start + event.id.end,
            in_band,
        }
    }

    /// One event of `event_type` with this share of optional fields.
    fn build(&mut self, event_type: EventType, optional_percent: u8) -> Built {
        let rng = &mut self.rng;
        let world = &self.world;
        let fields = event_type.fields();
        let has_campaign = fields.iter().any(|f| f.name.starts_with("campaign_"));
        let has_canvas = fields.iter().any(|f| f.name.starts_with("canvas_"));
        let origin = match (has_campaign, has_canvas) {
            (true, true) if rng.percent(45) => Origin::Campaign,
            (true, false) => Origin::Campaign,
            _ => Origin::Canvas,
        };
        let canvas = &world.canvases[rng.below(world.canvases.len())];
        let user = world.user(rng.below(world.users));
        let ctx = EventCtx {
            user: &user,
            origin,
            campaign: &world.campaigns[rng.below(world.campaigns.len())],
            message_variation: &world.message_variations[rng.below(world.message_variations.len())],
            canvas,
            step: &canvas.steps[rng.below(canvas.steps.len())],
            canvas_variation: &canvas.variations[rng.below(canvas.variations.len())],
            app_id: &world.app_ids[rng.below(world.app_ids.len())],
            time: self.time,
        };

        let mut user_json = String::with_capacity(160);
        let mut user_first = true;
        let mut props = String::with_capacity(1024);
        let mut props_first = true;
        let mut nested_end = None;
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
                        push_key(&mut user_json, &mut user_first, field.name);
                        push_str(&mut user_json, &value);
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
                    if !field.required && rng.percent(self.config.null_percent) {
                        props.push_str("null");
                    } else {
                        write_field(&mut props, rng, world, &ctx, field);
                    }
                }
                FieldLocation::CustomProperties => {
                    push_key(&mut props, &mut props_first, "custom_properties");
                    let (low, high) = self.config.custom_properties;
                    let count = rng.range_usize(low, high);
                    write_custom_properties(&mut props, rng, count);
                    nested_end = Some(props.len() - 1);
                }
                FieldLocation::PurchaseProperties => {
                    push_key(&mut props, &mut props_first, "purchase_properties");
                    let (low, high) = self.config.purchase_properties;
                    let count = rng.range_usize(low, high);
                    write_purchase_properties(&mut props, rng, count);
                    nested_end = Some(props.len() - 1);
                }
            }
        }

        let mut text = String::with_capacity(160 + user_json.len() + props.len());
        text.push_str("{\"event_type\":");
        push_str(&mut text, event_type.name());
        text.push_str(",\"id\":\"");
        let id_start = text.len();
        text.push_str(&id);
        let id_end = text.len();
        let _ = write!(
            text,
            "\",\"time\":{},\"user\":{{{user_json}}},\"properties\":{{",
            self.time
        );
        let props_start = text.len();
        text.push_str(&props);
        let props_end = text.len();
        text.push_str("}}");
        Built {
            text,
            id: id_start..id_end,
            // Where padding goes: before the closing brace of the custom or
            // purchase properties, or of `properties`.
            pad_at: nested_end.map_or(props_end, |end| props_start + end),
        }
    }
}

impl Iterator for Generator {
    type Item = String;

    /// The next event, its type drawn from the mix.
    fn next(&mut self) -> Option<String> {
        let mut out = String::with_capacity(1024);
        self.write_event(&mut out);
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// One event's text, before it is placed.
struct Built {
    text: String,
    /// The `id` value's range in `text`.
    id: Range<usize>,
    /// The closing brace of the object that padding goes into.
    pad_at: usize,
}

impl Built {
    /// Adds `"0":1,"1":1,…` before `pad_at` until the text is `min` bytes.
    fn pad_to(&mut self, min: usize) {
        let mut padding = String::new();
        let mut first = self.text.as_bytes()[self.pad_at - 1] == b'{';
        let mut key = 0_usize;
        while self.text.len() + padding.len() < min {
            if !std::mem::take(&mut first) {
                padding.push(',');
            }
            let _ = write!(padding, "\"{key:x}\":1");
            key += 1;
        }
        self.text.insert_str(self.pad_at, &padding);
    }
}

// ---------------------------------------------------------------------------
// The workspace: campaigns, canvases, apps and users the events refer to

#[derive(Debug, Clone)]
struct Named {
    id: String,
    name: &'static str,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
struct World {
    app_group_id: String,
    app_ids: Vec<String>,
    campaigns: Vec<Named>,
    message_variations: Vec<Named>,
    canvases: Vec<Canvas>,
    users: usize,
    user_seed: u64,
    external_id_percent: u8,
}

impl World {
    fn new(rng: &mut Rng, config: &Config) -> World {
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
        World {
            app_group_id: rng.uuid(),
            app_ids: (0..3).map(|_| rng.uuid()).collect(),
            campaigns,
            message_variations,
            canvases,
            users: config.users,
            user_seed: rng.next_u64(),
            external_id_percent: config.external_id_percent,
        }
    }

    /// User number `n`: the same whenever an event draws it.
    fn user(&self, n: usize) -> User {
        let mut rng = Rng::new(mix64(self.user_seed ^ n as u64));
        let first_name = rng.pick(FIRST_NAMES);
        let last_name = rng.pick(LAST_NAMES);
        // External ids in a few styles.
        let style = rng.below(9);
        let external_user_id = rng.percent(self.external_id_percent).then(|| match style {
            0..=3 => format!("cust-{:07}", 1_000_000 + n * 37),
            4..=6 => rng.uuid(),
            _ => format!("usr_{}", rng.alnum(20)),
        });
        let mut email = String::with_capacity(40);
        for c in first_name.chars().chain(['.']).chain(last_name.chars()) {
            let c = ascii_fold(c);
            if c.is_ascii_alphanumeric() || c == '.' {
                email.push(c.to_ascii_lowercase());
            }
        }
        let _ = write!(email, "{}@{}", n % 100, rng.pick(EMAIL_DOMAINS));
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
            email,
            phone: format!(
                "+{}{}",
                rng.pick(&["1", "33", "49", "34", "44"]),
                rng.range(600_000_000, 799_999_999)
            ),
            first_name,
            last_name,
            push_token: rng.hex(64),
        }
    }
}

/// Strips the accents of the few letters used in names, for e-mail addresses.
fn ascii_fold(c: char) -> char {
    match c {
        'ë' | 'é' | 'É' | 'ễ' => 'e',
        'ł' | 'Ł' => 'l',
        'ø' => 'o',
        'ü' => 'u',
        'ä' => 'a',
        other => other,
    }
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
