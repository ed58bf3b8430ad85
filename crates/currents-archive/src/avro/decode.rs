//! Avro binary data to JSON text, straight from the bytes: one record
//! becomes one storage-shaped Currents event, `{"event_type": …, <every
//! field, flat>}`, written as JSON text with no value tree in between.
//!
//! Each Avro value becomes the JSON an event reader expects: `null`;
//! booleans; `int` and `long` as integers; `float` and `double` as numbers
//! (`null` if not finite: JSON has no NaN); strings, escaped; a union as the
//! value of its branch (so `["null", "string"]` is `null` or the string);
//! arrays; maps and nested records as objects; enums as their symbol;
//! `bytes` and `fixed` as strings of the characters U+0000–U+00FF, one per
//! byte, as Avro's JSON encoding writes them. Strings are borrowed from the
//! block and copied, escaped, into a buffer of the decoder's; the event's
//! UTF-8 is checked once, whole, when it is appended to the caller's
//! `String` (one check of ~1 KB costs less than thirty of ~30 bytes).

use super::container::{read_bytes, read_long};
use super::schema::{Field, Node, Schema};
use crate::json;

/// Nesting of values beyond which a record is refused (Braze's are flat).
const MAX_VALUE_DEPTH: usize = 64;

/// The most items of a type that takes no bytes (`null`, an empty record)
/// one array or map block may hold: a damaged count must not make a few
/// bytes into billions of items.
const MAX_ZERO_WIDTH_ITEMS: u64 = 1 << 16;

/// Decodes the records of one schema into events of one type.
#[derive(Debug)]
pub(crate) struct Decoder {
    schema: Schema,
    min_sizes: Vec<usize>,
    /// `{"event_type":"<type>"`, the start of every event.
    prefix: Vec<u8>,
    /// A top-level field named `event_type`, which the event's own type
    /// replaces (Braze's schemas have none).
    shadowed_field: Option<usize>,
    /// Where a shadowed field's value is decoded and dropped.
    discard: Vec<u8>,
    /// Where the event is written before its UTF-8 is checked.
    event: Vec<u8>,
}

impl Decoder {
    /// A decoder for `schema`, whose top level must be a record, writing
    /// `event_type` as the events' type.
    pub(crate) fn new(schema: Schema, event_type: &str) -> Result<Decoder, String> {
        let fields = schema
            .root_fields()
            .ok_or("the top-level type is not a record")?;
        let shadowed_field = fields.iter().position(|field| field.name == "event_type");
        let mut prefix = Vec::with_capacity(event_type.len() + 16);
        prefix.extend_from_slice(b"{\"event_type\":");
        json::push_str(&mut prefix, event_type.as_bytes());
        let min_sizes = schema.min_sizes();
        Ok(Decoder {
            schema,
            min_sizes,
            prefix,
            shadowed_field,
            discard: Vec::new(),
            event: Vec::with_capacity(4_096),
        })
    }

    /// The fewest bytes one record takes.
    pub(crate) fn min_record_size(&self) -> usize {
        self.min_sizes[self.schema.root]
    }

    /// Appends the record at `*pos` in `data` to `out` as one event and
    /// moves `pos` past it. On error `out` is left as it was.
    pub(crate) fn record(
        &mut self,
        data: &[u8],
        pos: &mut usize,
        out: &mut String,
    ) -> Result<(), String> {
        let nodes = Nodes {
            nodes: &self.schema.nodes,
            min_sizes: &self.min_sizes,
        };
        let Node::Record(fields) = &self.schema.nodes[self.schema.root] else {
            return Err("the top-level type is not a record".to_owned());
        };
        let event = &mut self.event;
        event.clear();
        event.extend_from_slice(&self.prefix);
        for (idx, field) in fields.iter().enumerate() {
            if Some(idx) == self.shadowed_field {
                self.discard.clear();
                nodes.value(field.node, data, pos, &mut self.discard, 1)?;
                continue;
            }
            event.extend_from_slice(&field.json_key);
            nodes
                .value(field.node, data, pos, event, 1)
                .map_err(|detail| format!("field {}: {detail}", field.name))?;
        }
        event.push(b'}');
        let text = std::str::from_utf8(event)
            .map_err(|error| format!("a string that is not UTF-8: {error}"))?;
        out.push_str(text);
        Ok(())
    }
}

/// The schema's nodes, as decoding reads them.
#[derive(Clone, Copy)]
struct Nodes<'s> {
    nodes: &'s [Node],
    min_sizes: &'s [usize],
}

impl Nodes<'_> {
    fn value(
        self,
        node: usize,
        data: &[u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), String> {
        // A union is its branch's value: resolved here rather than by a
        // recursive call, since most of Braze's fields are `["null", T]`.
        let mut node = node;
        while let Node::Union(branches) = &self.nodes[node] {
            let index = read_long(data, pos)?;
            node = *usize::try_from(index)
                .ok()
                .and_then(|index| branches.get(index))
                .ok_or_else(|| format!("union branch {index} out of range"))?;
        }
        match &self.nodes[node] {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Boolean => match data.get(*pos) {
                Some(0) => {
                    *pos += 1;
                    out.extend_from_slice(b"false");
                }
                Some(1) => {
                    *pos += 1;
                    out.extend_from_slice(b"true");
                }
                Some(other) => return Err(format!("{other} is not a boolean")),
                None => return Err("the data ends inside a boolean".to_owned()),
            },
            Node::Int => {
                let value = read_long(data, pos)?;
                if i32::try_from(value).is_err() {
                    return Err(format!("{value} is out of range for an int"));
                }
                json::push_i64(out, value);
            }
            Node::Long => json::push_i64(out, read_long(data, pos)?),
            Node::Float => {
                let bytes = take::<4>(data, pos)?;
                json::push_f32(out, f32::from_le_bytes(bytes));
            }
            Node::Double => {
                let bytes = take::<8>(data, pos)?;
                json::push_f64(out, f64::from_le_bytes(bytes));
            }
            // Its UTF-8 is checked with the whole event's.
            Node::String => json::push_str(out, read_bytes(data, pos)?),
            Node::Bytes => json::push_latin1(out, read_bytes(data, pos)?),
            Node::Fixed(size) => {
                let end = pos
                    .checked_add(*size)
                    .filter(|&end| end <= data.len())
                    .ok_or("the data ends inside a fixed value")?;
                json::push_latin1(out, &data[*pos..end]);
                *pos = end;
            }
            Node::Enum(symbols) => {
                let index = read_long(data, pos)?;
                let symbol = usize::try_from(index)
                    .ok()
                    .and_then(|index| symbols.get(index))
                    .ok_or_else(|| format!("enum index {index} out of range"))?;
                out.extend_from_slice(symbol);
            }
            Node::Union(_) => return Err("a union directly inside a union".to_owned()),
            Node::Record(fields) => {
                check_depth(depth)?;
                self.record(fields, data, pos, out, depth + 1)?;
            }
            Node::Array(items) => {
                check_depth(depth)?;
                out.push(b'[');
                self.blocks(
                    *items,
                    0,
                    data,
                    pos,
                    |nodes, pos, out, first| {
                        if !first {
                            out.push(b',');
                        }
                        nodes.value(*items, data, pos, out, depth + 1)
                    },
                    out,
                )?;
                out.push(b']');
            }
            Node::Map(values) => {
                check_depth(depth)?;
                out.push(b'{');
                self.blocks(
                    *values,
                    1,
                    data,
                    pos,
                    |nodes, pos, out, first| {
                        if !first {
                            out.push(b',');
                        }
                        json::push_str(out, read_bytes(data, pos)?);
                        out.push(b':');
                        nodes.value(*values, data, pos, out, depth + 1)
                    },
                    out,
                )?;
                out.push(b'}');
            }
            Node::Pending => return Err("a type that was never defined".to_owned()),
        }
        Ok(())
    }

    fn record(
        self,
        fields: &[Field],
        data: &[u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), String> {
        out.push(b'{');
        for (idx, field) in fields.iter().enumerate() {
            let key = if idx == 0 {
                &field.json_key[1..]
            } else {
                &field.json_key
            };
            out.extend_from_slice(key);
            self.value(field.node, data, pos, out, depth)?;
        }
        out.push(b'}');
        Ok(())
    }

    /// Reads the blocks of an array or map, calling `item` for each item;
    /// `key_bytes` is what a map key takes at least.
    fn blocks(
        self,
        item_node: usize,
        key_bytes: usize,
        data: &[u8],
        pos: &mut usize,
        mut item: impl FnMut(Self, &mut usize, &mut Vec<u8>, bool) -> Result<(), String>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let item_size = self.min_sizes[item_node].saturating_add(key_bytes);
        let mut first = true;
        loop {
            let count = read_long(data, pos)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                read_long(data, pos)?;
            }
            let count = count.unsigned_abs();
            let left = u64::try_from(data.len() - *pos).unwrap_or(u64::MAX);
            let fits = match item_size {
                0 => count <= MAX_ZERO_WIDTH_ITEMS,
                size => count <= left / u64::try_from(size).unwrap_or(u64::MAX),
            };
            if !fits {
                return Err(format!("{count} items cannot fit in the {left} bytes left"));
            }
            for _ in 0..count {
                item(self, pos, out, first)?;
                first = false;
            }
        }
    }
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth > MAX_VALUE_DEPTH {
        return Err(format!(
            "values nested deeper than {MAX_VALUE_DEPTH} levels"
        ));
    }
    Ok(())
}

/// The next `N` bytes.
fn take<const N: usize>(data: &[u8], pos: &mut usize) -> Result<[u8; N], String> {
    let bytes: [u8; N] = data
        .get(*pos..*pos + N)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("the data ends inside a number")?;
    *pos += N;
    Ok(bytes)
}
