//! `cargo xtask codegen`: turns the Currents reference tables into Rust.
//!
//! Inputs (read-only, outside the repository): `currents-event-fields.tsv` and
//! `currents-to-mixpanel.tsv` from the reference directory, found at
//! `$BRIDGE_REFERENCE_DIR` or `../shared/reference` beside the workspace.
//! Outputs (committed, never edited by hand):
//! - `crates/currents-model/src/generated.rs`: the `EventType` enum and each
//!   type's field schema;
//! - `crates/bridge-server/src/mapping/generated.rs`: each type's Mixpanel
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
            project_root().join("crates/bridge-server/src/mapping/generated.rs"),
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
        None => project_root().join("../shared/reference"),
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
