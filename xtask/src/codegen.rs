//! `cargo xtask codegen`: turns the Currents reference tables into Rust.
//!
//! Inputs: `currents-event-fields.tsv` and `currents-to-mixpanel.tsv` in
//! `xtask/reference/` (data files of the repository; their README says where
//! they come from), or in `$BRIDGE_REFERENCE_DIR` when it is set.
//! Outputs (committed, never edited by hand):
//! - `crates/currents-model/src/generated.rs`: the `EventType` enum and each
//!   type's field schema;
//! - `crates/currents-model/src/typed_generated.rs`: one struct per type, the
//!   `TypedEvent` enum over them, and the conversion from an `Event`;
//! - `crates/currents-mixpanel/src/mapping/generated.rs`: each type's Mixpanel
//!   event name and exported property list.
//!
//! `--check` regenerates in memory and fails when a committed file differs,
//! so CI catches a table change that was not regenerated.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

use crate::project_root;

/// Whether to write the generated files or only compare them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Write,
    Check,
}

pub(crate) fn run(mode: Mode) -> anyhow::Result<()> {
    let reference_dir = reference_dir();
    if !reference_dir.exists() {
        bail!(
            "reference tables not found at {}: set BRIDGE_REFERENCE_DIR to the folder holding currents-event-fields.tsv",
            reference_dir.display()
        );
    }
    let fields = read_tsv(&reference_dir.join("currents-event-fields.tsv"))?;
    let mapping = read_tsv(&reference_dir.join("currents-to-mixpanel.tsv"))?;
    let schema = Schema::from_rows(&fields)?;
    let outputs = [
        (
            project_root().join("crates/currents-model/src/generated.rs"),
            rustfmt(render_model(&schema))?,
        ),
        (
            project_root().join("crates/currents-model/src/typed_generated.rs"),
            rustfmt(render_typed(&schema)?)?,
        ),
        (
            project_root().join("crates/currents-mixpanel/src/mapping/generated.rs"),
            rustfmt(render_mapping(&schema, &mapping)?)?,
        ),
    ];
    let mut stale = Vec::new();
    for (path, text) in &outputs {
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current == *text {
            continue;
        }
        match mode {
            Mode::Write => std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?,
            Mode::Check => stale.push(path.display().to_string()),
        }
    }
    ensure!(
        stale.is_empty(),
        "generated files are stale, run `cargo xtask codegen`: {}",
        stale.join(", ")
    );
    Ok(())
}

/// Formats generated code the way `cargo fmt` would, so `fmt --check` passes.
fn rustfmt(code: String) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run rustfmt")?;
    child
        .stdin
        .take()
        .context("rustfmt has no stdin")?
        .write_all(code.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "rustfmt failed on generated code");
    Ok(String::from_utf8(output.stdout)?)
}

/// Where the reference tables live.
pub(crate) fn reference_dir() -> PathBuf {
    match std::env::var_os("BRIDGE_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join("xtask").join("reference"),
    }
}

type Row = BTreeMap<String, String>;

fn read_tsv(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{} is empty", path.display()))?
        .split('\t')
        .collect();
    let mut rows = Vec::new();
    for (line_idx, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        ensure!(
            cells.len() == header.len(),
            "{} line {}: expected {} cells, found {}",
            path.display(),
            line_idx + 2,
            header.len(),
            cells.len()
        );
        rows.push(
            header
                .iter()
                .zip(cells)
                .map(|(key, cell)| (key.to_string(), cell.to_string()))
                .collect(),
        );
    }
    Ok(rows)
}

struct Field {
    name: String,
    /// The `AvroType` variant, e.g. `StringArray`.
    avro_type: &'static str,
    required: bool,
    pii: bool,
    location: &'static str,
}

/// Event types in name order, each with its fields in name order.
struct Schema {
    types: BTreeMap<String, Vec<Field>>,
}

impl Schema {
    fn from_rows(rows: &[Row]) -> anyhow::Result<Schema> {
        let mut types: BTreeMap<String, Vec<Field>> = BTreeMap::new();
        for row in rows {
            let event_type = &row["event_type"];
            let avro_type = match row["avro_type"].as_str() {
                "string" => "String",
                "int" => "Int",
                "long" => "Long",
                "float" => "Float",
                "boolean" => "Boolean",
                "array<string>" => "StringArray",
                other => bail!("{event_type}: unknown avro type {other:?}"),
            };
            let location = match row["http_location"].as_str() {
                "top" => "Top",
                "user" => "User",
                "properties" => "Properties",
                "properties.custom_properties" => "CustomProperties",
                "properties.purchase_properties" => "PurchaseProperties",
                other => bail!("{event_type}: unknown http location {other:?}"),
            };
            types.entry(event_type.clone()).or_default().push(Field {
                name: row["field"].clone(),
                avro_type,
                required: yes_no(&row["required"])?,
                pii: yes_no(&row["pii"])?,
                location,
            });
        }
        for (event_type, fields) in &mut types {
            fields.sort_by(|a, b| a.name.cmp(&b.name));
            let mut seen = BTreeSet::new();
            for field in fields.iter() {
                ensure!(
                    seen.insert(&field.name),
                    "{event_type}: field {} listed twice",
                    field.name
                );
            }
        }
        let mut variants = BTreeSet::new();
        for event_type in types.keys() {
            ensure!(
                variants.insert(variant_name(event_type)),
                "{event_type}: variant name collides with another type"
            );
        }
        Ok(Schema { types })
    }
}

fn yes_no(cell: &str) -> anyhow::Result<bool> {
    match cell {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("expected yes or no, found {other:?}"),
    }
}

/// `users.messages.email.Click` becomes `MessagesEmailClick`.
fn variant_name(event_type: &str) -> String {
    let without_prefix = event_type.strip_prefix("users.").unwrap_or(event_type);
    let mut name = String::new();
    for segment in without_prefix.split('.') {
        let mut chars = segment.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.extend(chars);
        }
    }
    name
}

const HEADER: &str = "// @generated by `cargo xtask codegen` from the Currents reference tables.\n// Do not edit by hand: change the generator in xtask/src/codegen.rs instead.\n";

fn render_model(schema: &Schema) -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str(
        "\n//! Every Currents event type and its field schema, generated from Braze's tables.\n\n",
    );
    out.push_str("use crate::schema::{AvroType, FieldLocation, FieldSpec};\n\n");
    let _ = writeln!(
        out,
        "/// Every Currents event type in the reference tables ({} types).\n///\n/// Types Braze adds later are not rejected: they parse as\n/// [`crate::EventTypeName::Other`].",
        schema.types.len()
    );
    out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\npub enum EventType {\n");
    for event_type in schema.types.keys() {
        let _ = writeln!(
            out,
            "    /// `{event_type}`\n    {},",
            variant_name(event_type)
        );
    }
    out.push_str("}\n\nimpl EventType {\n");
    let _ = writeln!(
        out,
        "    /// Every known type, ordered by name.\n    pub const ALL: [EventType; {}] = [",
        schema.types.len()
    );
    for event_type in schema.types.keys() {
        let _ = writeln!(out, "        EventType::{},", variant_name(event_type));
    }
    out.push_str("    ];\n\n");
    out.push_str("    /// The type's name as Braze writes it, e.g. `users.messages.email.Click`.\n    pub const fn name(self) -> &'static str {\n        match self {\n");
    for event_type in schema.types.keys() {
        let _ = writeln!(
            out,
            "            EventType::{} => {event_type:?},",
            variant_name(event_type)
        );
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    /// Looks a type up by its exact (case-sensitive) name.\n    pub fn from_name(name: &str) -> Option<EventType> {\n        match name {\n");
    for event_type in schema.types.keys() {
        let _ = writeln!(
            out,
            "            {event_type:?} => Some(EventType::{}),",
            variant_name(event_type)
        );
    }
    out.push_str("            _ => None,\n        }\n    }\n\n");
    out.push_str("    /// The type's fields, ordered by name (see [`EventType::field`]).\n    #[rustfmt::skip]\n    pub const fn fields(self) -> &'static [FieldSpec] {\n        match self {\n");
    for (event_type, fields) in &schema.types {
        let _ = writeln!(
            out,
            "            EventType::{} => &[",
            variant_name(event_type)
        );
        for field in fields {
            let _ = writeln!(
                out,
                "                FieldSpec {{ name: {:?}, avro_type: AvroType::{}, required: {}, pii: {}, location: FieldLocation::{} }},",
                field.name, field.avro_type, field.required, field.pii, field.location
            );
        }
        out.push_str("            ],\n");
    }
    out.push_str("        }\n    }\n}\n");
    out
}

/// Rust keywords (strict and reserved, 2024 edition) that a field name may
/// not use as is.
const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// A field name as a Rust identifier: `type` becomes `r#type`; the keywords
/// that cannot be raw identifiers get a trailing underscore.
fn rust_ident(name: &str) -> String {
    match name {
        "crate" | "self" | "Self" | "super" | "_" => format!("{name}_"),
        _ if RUST_KEYWORDS.contains(&name) => format!("r#{name}"),
        _ => name.to_string(),
    }
}

/// The Avro type as Braze's tables write it.
fn avro_name(avro_type: &str) -> &'static str {
    match avro_type {
        "String" => "string",
        "Int" => "int",
        "Long" => "long",
        "Float" => "float",
        "Boolean" => "boolean",
        _ => "array<string>",
    }
}

/// The Rust type of a field's value, and the `typed::decode` function that
/// reads it from a property.
fn rust_type(avro_type: &str) -> (&'static str, &'static str) {
    match avro_type {
        "String" => ("Cow<'a, str>", "string"),
        "Int" | "Long" => ("i64", "integer"),
        "Float" => ("f64", "float"),
        "Boolean" => ("bool", "boolean"),
        _ => ("Vec<Cow<'a, str>>", "string_array"),
    }
}

/// The `User` fields a `user` field of the tables may name.
const USER_FIELDS: [&str; 4] = ["user_id", "external_user_id", "device_id", "timezone"];

/// The one event type whose `name` field the parser moves to
/// `Event::custom_event_name`.
const CUSTOM_EVENT: &str = "users.behaviors.CustomEvent";

/// Where a typed struct's field takes its value from.
enum Source {
    /// An `Event::user` id field.
    User,
    /// `Event::custom_properties` or `Event::purchase_properties`.
    Nested,
    /// `Event::custom_event_name`.
    CustomEventName,
    /// A key of `Event::properties`, decoded by this `typed::decode` function.
    Property(&'static str),
}

/// One field of a typed struct (other than `id`, `time` and `extra`).
struct TypedField<'s> {
    field: &'s Field,
    ident: String,
    source: Source,
    /// The Rust type, `Option`-wrapped when the value may be absent.
    rust_type: String,
    doc: String,
}

/// Item names the generated file uses besides its structs.
const RESERVED_ITEM_NAMES: &[&str] = &[
    "TypedEvent",
    "TypedError",
    "Event",
    "EventType",
    "EventTypeName",
    "NestedProperties",
    "Property",
    "Cow",
    "Other",
];

/// Local names the generated conversion uses besides the fields.
const RESERVED_FIELD_NAMES: &[&str] = &[
    "id", "time", "extra", "event", "property", "fields", "typed",
];

fn typed_fields<'s>(event_type: &str, fields: &'s [Field]) -> anyhow::Result<Vec<TypedField<'s>>> {
    let mut typed = Vec::new();
    let mut has_id = false;
    let mut has_time = false;
    for field in fields {
        let avro = avro_name(field.avro_type);
        let mut doc = format!(
            "`{}`: `{avro}`, {}{}.",
            field.name,
            if field.required {
                "required"
            } else {
                "optional"
            },
            if field.pii { ", personal data" } else { "" },
        );
        let (ident, source, value_type) = match (field.location, field.name.as_str()) {
            ("Top", "id") => {
                ensure!(
                    field.avro_type == "String" && field.required,
                    "{event_type}: id must be a required string"
                );
                has_id = true;
                continue;
            }
            ("Top", "time") => {
                ensure!(
                    matches!(field.avro_type, "Int" | "Long") && field.required,
                    "{event_type}: time must be a required int or long"
                );
                has_time = true;
                continue;
            }
            ("Top", other) => bail!("{event_type}: unexpected top-level field {other}"),
            ("User", name) => {
                ensure!(
                    USER_FIELDS.contains(&name) && field.avro_type == "String",
                    "{event_type}: unexpected user field {name}"
                );
                doc = format!(
                    "`user.{name}` (top level in storage): `{avro}`, {}{}.",
                    if field.required {
                        "required"
                    } else {
                        "optional"
                    },
                    if field.pii { ", personal data" } else { "" },
                );
                (name.to_string(), Source::User, "Cow<'a, str>")
            }
            (location @ ("CustomProperties" | "PurchaseProperties"), name) => {
                let (ident, which, http) = if location == "CustomProperties" {
                    ("custom_properties", "custom event", "custom_properties")
                } else {
                    ("purchase_properties", "purchase", "purchase_properties")
                };
                doc = format!(
                    "The {which}'s own properties: Braze's `{name}` field (`{avro}`, {}{}),\n\
                     a JSON-encoded object in storage and `properties.{http}` over HTTP.\n\
                     `None` when the event carries none.",
                    if field.required {
                        "required"
                    } else {
                        "optional"
                    },
                    if field.pii { ", personal data" } else { "" },
                );
                (ident.to_string(), Source::Nested, "NestedProperties<'a>")
            }
            ("Properties", "name") if event_type == CUSTOM_EVENT => {
                ensure!(
                    field.avro_type == "String",
                    "{event_type}: name must be a string"
                );
                doc.push_str(" The custom event's name (from [`Event::custom_event_name`]).");
                ("name".to_string(), Source::CustomEventName, "Cow<'a, str>")
            }
            ("Properties", name) => {
                let (value_type, decoder) = rust_type(field.avro_type);
                (rust_ident(name), Source::Property(decoder), value_type)
            }
            (location, name) => bail!("{event_type}: field {name} has unknown location {location}"),
        };
        let optional = matches!(source, Source::Nested) || !field.required;
        let rust_type = if optional {
            format!("Option<{value_type}>")
        } else {
            value_type.to_string()
        };
        typed.push(TypedField {
            field,
            ident,
            source,
            rust_type,
            doc,
        });
    }
    ensure!(
        has_id && has_time,
        "{event_type}: needs an id and a time field"
    );
    let mut seen = BTreeSet::new();
    for field in &typed {
        let bare = field.ident.trim_start_matches("r#");
        ensure!(
            !RESERVED_FIELD_NAMES.contains(&bare) && seen.insert(bare.to_string()),
            "{event_type}: field {} would clash with another field of the typed struct",
            field.field.name
        );
    }
    Ok(typed)
}

fn render_typed(schema: &Schema) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str(
        "\n//! One struct per Currents event type, the [`TypedEvent`] enum over them, and\n\
         //! the conversion from an [`Event`], generated from Braze's tables.\n\
         //!\n\
         //! Re-exported by [`crate::typed`], which documents them and holds the\n\
         //! decoders the conversion calls.\n\n",
    );
    out.push_str(
        "use std::borrow::Cow;\n\n\
         use crate::typed::{TypedError, decode};\n\
         use crate::{Event, EventType, NestedProperties, Property};\n",
    );
    let mut variants = Vec::new();
    for (event_type, fields) in &schema.types {
        let variant = variant_name(event_type);
        ensure!(
            !RESERVED_ITEM_NAMES.contains(&variant.as_str()),
            "{event_type}: struct name {variant} clashes with an item of the typed module"
        );
        let typed = typed_fields(event_type, fields)?;
        let time_avro = fields
            .iter()
            .find(|field| field.name == "time")
            .map_or("int", |field| avro_name(field.avro_type));
        let _ = write!(
            out,
            "\n/// A typed `{event_type}` event\n/// ([`EventType::{variant}`]).\n\
             #[derive(Debug, Clone)]\n\
             #[non_exhaustive]\n\
             pub struct {variant}<'a> {{\n\
             /// `id`: `string`, required. Braze's globally unique event id, the deduplication key.\n\
             pub id: Cow<'a, str>,\n\
             /// `time`: `{time_avro}`, required. When the event happened, UNIX seconds (UTC).\n\
             pub time: i64,\n"
        );
        for field in &typed {
            for line in field.doc.lines() {
                let _ = writeln!(out, "/// {line}");
            }
            let _ = writeln!(out, "pub {}: {},", field.ident, field.rust_type);
        }
        out.push_str(
            "/// What this type's schema does not name, kept as it arrived: unknown\n\
             /// properties (in input order); then any user id field, custom or purchase\n\
             /// properties or custom event name the event carries but this type does\n\
             /// not declare; then [`Event::extra`] and [`crate::User::extra`].\n\
             pub extra: Vec<Property<'a>>,\n}\n",
        );

        let _ = write!(
            out,
            "\nimpl<'a> {variant}<'a> {{\n\
             /// Reads an event of this type (the caller has checked the type).\n\
             #[inline(never)]\n\
             pub(crate) fn from_event(event: Event<'a>) -> Result<{variant}<'a>, TypedError> {{\n"
        );
        let decoded: Vec<(&TypedField<'_>, &str)> = typed
            .iter()
            .filter_map(|field| match field.source {
                Source::Property(decoder) => Some((field, decoder)),
                _ => None,
            })
            .collect();
        // The struct is built first, optional fields `None` and required ones
        // a placeholder, so that an error exit drops one value rather than
        // one local per field. Required fields are read into locals and
        // checked at the end.
        let _ = writeln!(
            out,
            "let mut fields = decode::Fields::new(EventType::{variant});"
        );
        for (field, _) in decoded.iter().filter(|(field, _)| field.field.required) {
            let _ = writeln!(out, "let mut {} = None;", field.ident);
        }
        let _ = write!(
            out,
            "let mut typed = {variant} {{\nid: event.id,\ntime: event.time,\n"
        );
        for field in &typed {
            let value = match field.source {
                _ if field.field.required && !matches!(field.source, Source::Nested) => {
                    "Default::default()".to_string()
                }
                Source::User => format!("event.user.{}", field.ident),
                Source::Nested => format!("event.{}", field.ident),
                Source::CustomEventName => "event.custom_event_name".to_string(),
                Source::Property(_) => "None".to_string(),
            };
            let _ = writeln!(out, "{}: {value},", field.ident);
        }
        out.push_str("extra: Vec::new(),\n};\n");
        if decoded.is_empty() {
            out.push_str("typed.extra = event.properties;\n");
        } else {
            out.push_str(
                "for property in event.properties {\n\
                 match property.key.as_ref() {\n",
            );
            for (field, decoder) in &decoded {
                let slot = if field.field.required {
                    field.ident.clone()
                } else {
                    format!("typed.{}", field.ident)
                };
                let _ = writeln!(
                    out,
                    "{name:?} => fields.{decoder}(&mut {slot}, {name:?}, &property),",
                    name = field.field.name,
                );
            }
            out.push_str("_ => typed.extra.push(property),\n}\n}\n");
        }
        out.push_str("fields.finish()?;\n");
        let declares = |ident: &str| typed.iter().any(|field| field.ident == ident);
        for user_field in USER_FIELDS {
            if !declares(user_field) {
                let _ = writeln!(
                    out,
                    "decode::leftover_str(&mut typed.extra, {user_field:?}, event.user.{user_field});"
                );
            }
        }
        for nested in ["custom_properties", "purchase_properties"] {
            if !declares(nested) {
                let _ = writeln!(
                    out,
                    "decode::leftover_nested(&mut typed.extra, {nested:?}, event.{nested});"
                );
            }
        }
        if !typed
            .iter()
            .any(|field| matches!(field.source, Source::CustomEventName))
        {
            out.push_str(
                "decode::leftover_str(&mut typed.extra, \"name\", event.custom_event_name);\n",
            );
        }
        out.push_str("typed.extra.extend(event.extra);\ntyped.extra.extend(event.user.extra);\n");
        for field in &typed {
            let value = match field.source {
                _ if !field.field.required => continue,
                Source::Nested => continue,
                Source::User => format!("event.user.{}", field.ident),
                Source::CustomEventName => "event.custom_event_name".to_string(),
                Source::Property(_) => field.ident.clone(),
            };
            let _ = writeln!(
                out,
                "typed.{ident} = fields.required({name:?}, {value})?;",
                ident = field.ident,
                name = field.field.name,
            );
        }
        out.push_str("Ok(typed)\n}\n}\n");
        variants.push((event_type, variant));
    }

    let _ = write!(
        out,
        "\n/// An event as the struct of its type: one variant per type in Braze's\n\
         /// tables ({} types), and [`TypedEvent::Other`] for the types this version\n\
         /// does not know.\n\
         ///\n\
         /// Variants differ in size (the largest struct has dozens of fields); they are\n\
         /// not boxed, so a conversion costs no allocation. Box the value to store many.\n\
         #[derive(Debug, Clone)]\n\
         #[non_exhaustive]\n\
         #[allow(clippy::large_enum_variant)]\n\
         pub enum TypedEvent<'a> {{\n",
        variants.len()
    );
    for (event_type, variant) in &variants {
        let _ = writeln!(out, "/// `{event_type}`\n{variant}({variant}<'a>),");
    }
    out.push_str(
        "/// An event of a type this version does not know, unchanged.\n\
         Other(Event<'a>),\n}\n\n",
    );
    out.push_str(
        "impl<'a> TypedEvent<'a> {\n\
         /// Converts an event into the struct of its type.\n\
         pub(crate) fn from_event(event: Event<'a>) -> Result<TypedEvent<'a>, TypedError> {\n\
         let Some(event_type) = event.event_type.known() else {\n\
         return Ok(TypedEvent::Other(event));\n\
         };\n\
         match event_type {\n",
    );
    for (_, variant) in &variants {
        let _ = writeln!(
            out,
            "EventType::{variant} => {variant}::from_event(event).map(TypedEvent::{variant}),"
        );
    }
    out.push_str("}\n}\n\n");
    out.push_str(
        "/// The event's type, or `None` for an [`TypedEvent::Other`] event of a type\n\
         /// this version does not know.\n\
         pub fn event_type(&self) -> Option<EventType> {\n\
         match self {\n",
    );
    for (_, variant) in &variants {
        let _ = writeln!(
            out,
            "TypedEvent::{variant}(_) => Some(EventType::{variant}),"
        );
    }
    out.push_str("TypedEvent::Other(event) => event.event_type.known(),\n}\n}\n\n");
    out.push_str(
        "/// Braze's globally unique event id, the deduplication key.\n\
         pub fn id(&self) -> &str {\n\
         match self {\n",
    );
    for (_, variant) in &variants {
        let _ = writeln!(out, "TypedEvent::{variant}(event) => &event.id,");
    }
    out.push_str("TypedEvent::Other(event) => &event.id,\n}\n}\n\n");
    out.push_str(
        "/// When the event happened, UNIX seconds (UTC).\n\
         pub fn time(&self) -> i64 {\n\
         match self {\n",
    );
    for (_, variant) in &variants {
        let _ = writeln!(out, "TypedEvent::{variant}(event) => event.time,");
    }
    out.push_str("TypedEvent::Other(event) => event.time,\n}\n}\n}\n");
    Ok(out)
}

fn render_mapping(schema: &Schema, rows: &[Row]) -> anyhow::Result<String> {
    let mut known = Vec::new();
    let mut legacy = Vec::new();
    let mut seen = BTreeSet::new();
    for row in rows {
        let event_type = row["event_type"].as_str();
        ensure!(seen.insert(event_type), "{event_type}: mapped twice");
        let name = match row["mixpanel_event_name"].as_str() {
            "(not exported)" => "ExportName::NotExported".to_string(),
            name => format!("ExportName::Named({name:?})"),
        };
        let properties = match row["mixpanel_properties"].as_str() {
            "*" => "PropertyList::All".to_string(),
            list => {
                let mut keys: Vec<&str> = list.split(',').map(str::trim).collect();
                keys.sort_unstable();
                keys.dedup();
                format!("PropertyList::Only(&{keys:?})")
            }
        };
        let rule = format!("ExportRule {{ name: {name}, properties: {properties} }}");
        if schema.types.contains_key(event_type) {
            known.push((variant_name(event_type), rule));
        } else {
            legacy.push((event_type.to_string(), rule));
        }
    }
    let missing: Vec<&String> = schema
        .types
        .keys()
        .filter(|event_type| !seen.contains(event_type.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "types without a Mixpanel mapping row: {missing:?}"
    );

    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str("\n//! Each Currents event type's Mixpanel name and exported properties.\n\n");
    out.push_str("use currents_model::EventType;\n\nuse super::rules::{ExportName, ExportRule, PropertyList};\n\n");
    out.push_str("/// The export rule of a type in the field tables.\n#[rustfmt::skip]\npub(super) const fn rule_for(event_type: EventType) -> ExportRule {\n    match event_type {\n");
    for (variant, rule) in &known {
        let _ = writeln!(out, "        EventType::{variant} => {rule},");
    }
    out.push_str("    }\n}\n\n");
    out.push_str("/// Types Braze's Mixpanel page names but its field tables no longer list.\npub(super) const LEGACY_RULES: &[(&str, ExportRule)] = &[\n");
    for (event_type, rule) in &legacy {
        let _ = writeln!(out, "    ({event_type:?}, {rule}),");
    }
    out.push_str("];\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Row, Schema, render_typed, rust_ident};

    fn row(event_type: &str, field: &str, avro_type: &str, required: &str, location: &str) -> Row {
        [
            ("event_type", event_type),
            ("field", field),
            ("avro_type", avro_type),
            ("required", required),
            ("pii", "no"),
            ("http_location", location),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
    }

    fn schema_with(extra: &[Row]) -> anyhow::Result<Schema> {
        let mut rows = vec![
            row("users.messages.pigeon.Send", "id", "string", "yes", "top"),
            row("users.messages.pigeon.Send", "time", "long", "yes", "top"),
            row(
                "users.messages.pigeon.Send",
                "user_id",
                "string",
                "yes",
                "user",
            ),
        ];
        rows.extend_from_slice(extra);
        Schema::from_rows(&rows)
    }

    #[test]
    fn keywords_become_raw_identifiers() {
        assert_eq!(rust_ident("type"), "r#type");
        assert_eq!(rust_ident("gen"), "r#gen");
        assert_eq!(rust_ident("self"), "self_");
        assert_eq!(rust_ident("campaign_id"), "campaign_id");
    }

    #[test]
    fn typed_structs_follow_the_tables() -> anyhow::Result<()> {
        let schema = schema_with(&[
            row(
                "users.messages.pigeon.Send",
                "type",
                "string",
                "no",
                "properties",
            ),
            row(
                "users.messages.pigeon.Send",
                "weight",
                "float",
                "yes",
                "properties",
            ),
            row(
                "users.messages.pigeon.Send",
                "tags",
                "array<string>",
                "no",
                "properties",
            ),
        ])?;
        let code = render_typed(&schema)?;
        for expected in [
            "pub struct MessagesPigeonSend<'a> {",
            "/// `time`: `long`, required.",
            "pub r#type: Option<Cow<'a, str>>,",
            "pub weight: f64,",
            "pub tags: Option<Vec<Cow<'a, str>>>,",
            "pub user_id: Cow<'a, str>,",
            "\"type\" => fields.string(&mut typed.r#type, \"type\", &property),",
            "\"weight\" => fields.float(&mut weight, \"weight\", &property),",
            "typed.weight = fields.required(\"weight\", weight)?;",
            "typed.user_id = fields.required(\"user_id\", event.user.user_id)?;",
            "decode::leftover_str(&mut typed.extra, \"device_id\", event.user.device_id);",
            "MessagesPigeonSend(MessagesPigeonSend<'a>),",
        ] {
            assert!(code.contains(expected), "missing {expected:?} in:\n{code}");
        }
        Ok(())
    }

    #[test]
    fn clashing_field_names_are_rejected() -> anyhow::Result<()> {
        for field in ["extra", "fields", "typed"] {
            let schema = schema_with(&[row(
                "users.messages.pigeon.Send",
                field,
                "string",
                "no",
                "properties",
            )])?;
            assert!(render_typed(&schema).is_err(), "{field} was accepted");
        }
        let schema = schema_with(&[row(
            "users.messages.pigeon.Send",
            "campaign",
            "string",
            "no",
            "top",
        )])?;
        assert!(
            render_typed(&schema).is_err(),
            "a new top-level field was accepted"
        );
        Ok(())
    }
}
