//! An Avro schema, compiled from its JSON text for decoding: every type a
//! node of one arena, named types resolved to their node, and each record
//! field's JSON key written out once, so that decoding a record copies text
//! and never looks a name up.
//!
//! Logical types (`timestamp-millis`, `uuid`, `decimal`, …) are read as
//! their underlying type; Braze's schemas use none. Defaults, aliases,
//! docs and orders do not change how data is read and are ignored.

use std::collections::HashMap;

use serde_json::Value;

use crate::json;

/// Nesting of schema definitions beyond which a schema is refused.
const MAX_SCHEMA_DEPTH: usize = 64;

/// Nesting of records beyond which [`Schema::min_sizes`] stops counting.
const MAX_SIZE_DEPTH: usize = 256;

/// A compiled schema; `nodes[root]` is the top-level type.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) nodes: Vec<Node>,
    pub(crate) root: usize,
    /// The full name of the top-level type, when it is named.
    pub(crate) root_name: Option<String>,
}

/// One type of the schema.
#[derive(Debug)]
pub(crate) enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Vec<Field>),
    /// Each symbol as JSON text (quoted, escaped).
    Enum(Vec<Vec<u8>>),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Fixed(usize),
    /// A named type whose definition is being read (never left in a
    /// compiled schema).
    Pending,
}

/// One field of a record.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: String,
    /// `,"name":`, the field's JSON key with a comma before it and a colon
    /// after it (`&json_key[1..]` for a first field).
    pub(crate) json_key: Vec<u8>,
    pub(crate) node: usize,
}

impl Schema {
    /// Compiles the JSON text of a schema.
    pub(crate) fn parse(text: &str) -> Result<Schema, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let mut compiler = Compiler::default();
        let root = compiler.node(&value, None, 0)?;
        let root_name = compiler.root_name;
        Ok(Schema {
            nodes: compiler.nodes,
            root,
            root_name,
        })
    }

    /// The fields of the top-level record; `None` when it is not a record.
    pub(crate) fn root_fields(&self) -> Option<&[Field]> {
        match &self.nodes[self.root] {
            Node::Record(fields) => Some(fields),
            _ => None,
        }
    }

    /// The fewest bytes a value of each node takes, so that a count of
    /// items can be checked against the bytes left before decoding.
    pub(crate) fn min_sizes(&self) -> Vec<usize> {
        let mut sizes = vec![None; self.nodes.len()];
        (0..self.nodes.len())
            .map(|idx| self.min_size(idx, &mut sizes, 0))
            .collect()
    }

    fn min_size(&self, idx: usize, sizes: &mut [Option<usize>], depth: usize) -> usize {
        if let Some(size) = sizes[idx] {
            return size;
        }
        // A record that contains itself without a union or array in between
        // cannot be written at all, and chains of records may be long: past
        // this depth, 0 (a lower bound that is always true) rather than a
        // deep recursion.
        if depth > MAX_SIZE_DEPTH {
            return 0;
        }
        let size = match &self.nodes[idx] {
            Node::Null | Node::Pending => 0,
            Node::Boolean | Node::Int | Node::Long | Node::Bytes | Node::String => 1,
            Node::Enum(_) | Node::Array(_) | Node::Map(_) | Node::Union(_) => 1,
            Node::Float => 4,
            Node::Double => 8,
            Node::Fixed(size) => *size,
            Node::Record(fields) => fields.iter().fold(0_usize, |sum, field| {
                sum.saturating_add(self.min_size(field.node, sizes, depth + 1))
            }),
        };
        sizes[idx] = Some(size);
        size
    }
}

#[derive(Default)]
struct Compiler {
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
    root_name: Option<String>,
}

impl Compiler {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn node(
        &mut self,
        value: &Value,
        namespace: Option<&str>,
        depth: usize,
    ) -> Result<usize, String> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!("nested deeper than {MAX_SCHEMA_DEPTH} levels"));
        }
        match value {
            Value::String(name) => match primitive(name) {
                Some(node) => Ok(self.push(node)),
                None => self.reference(name, namespace),
            },
            Value::Array(branches) => {
                let mut nodes = Vec::with_capacity(branches.len());
                for branch in branches {
                    nodes.push(self.node(branch, namespace, depth + 1)?);
                }
                if nodes.is_empty() {
                    return Err("an empty union".to_owned());
                }
                Ok(self.push(Node::Union(nodes)))
            }
            Value::Object(object) => {
                let kind = object.get("type").ok_or("a type without \"type\"")?;
                let kind = match kind {
                    Value::String(kind) => kind.as_str(),
                    // `{"type": {...}}` or `{"type": [...]}`: the type is the inner one.
                    nested => return self.node(nested, namespace, depth + 1),
                };
                if let Some(node) = primitive(kind) {
                    return Ok(self.push(node));
                }
                match kind {
                    "record" | "error" => self.record(object, namespace, depth),
                    "enum" => {
                        let symbols = object
                            .get("symbols")
                            .and_then(Value::as_array)
                            .ok_or("an enum without \"symbols\"")?;
                        let mut json_symbols = Vec::with_capacity(symbols.len());
                        for symbol in symbols {
                            let symbol = symbol
                                .as_str()
                                .ok_or("an enum symbol that is not a string")?;
                            let mut text = Vec::with_capacity(symbol.len() + 2);
                            json::push_str(&mut text, symbol.as_bytes());
                            json_symbols.push(text);
                        }
                        let idx = self.push(Node::Enum(json_symbols));
                        self.name(object, namespace, idx)?;
                        Ok(idx)
                    }
                    "fixed" => {
                        let size = object
                            .get("size")
                            .and_then(Value::as_u64)
                            .and_then(|size| usize::try_from(size).ok())
                            .ok_or("a fixed type without a valid \"size\"")?;
                        let idx = self.push(Node::Fixed(size));
                        self.name(object, namespace, idx)?;
                        Ok(idx)
                    }
                    "array" => {
                        let items = object.get("items").ok_or("an array without \"items\"")?;
                        let items = self.node(items, namespace, depth + 1)?;
                        Ok(self.push(Node::Array(items)))
                    }
                    "map" => {
                        let values = object.get("values").ok_or("a map without \"values\"")?;
                        let values = self.node(values, namespace, depth + 1)?;
                        Ok(self.push(Node::Map(values)))
                    }
                    other => self.reference(other, namespace),
                }
            }
            other => Err(format!("{other} is not a type")),
        }
    }

    fn record(
        &mut self,
        object: &serde_json::Map<String, Value>,
        namespace: Option<&str>,
        depth: usize,
    ) -> Result<usize, String> {
        // Named before its fields are read, so that a field may refer to it.
        let idx = self.push(Node::Pending);
        let full_name = self.name(object, namespace, idx)?;
        let own_namespace = full_name
            .rsplit_once('.')
            .map(|(space, _)| space.to_owned());
        if self.root_name.is_none() && idx == 0 {
            self.root_name = Some(full_name.clone());
        }
        let fields = object
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("record {full_name} has no \"fields\""))?;
        let mut compiled = Vec::with_capacity(fields.len());
        for field in fields {
            let name = field
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a field of {full_name} has no name"))?;
            let kind = field
                .get("type")
                .ok_or_else(|| format!("field {name} of {full_name} has no type"))?;
            let node = self.node(kind, own_namespace.as_deref(), depth + 1)?;
            let mut json_key = Vec::with_capacity(name.len() + 4);
            json_key.push(b',');
            json::push_str(&mut json_key, name.as_bytes());
            json_key.push(b':');
            compiled.push(Field {
                name: name.to_owned(),
                json_key,
                node,
            });
        }
        self.nodes[idx] = Node::Record(compiled);
        Ok(idx)
    }

    /// Registers the named type at `idx`; its full name.
    fn name(
        &mut self,
        object: &serde_json::Map<String, Value>,
        namespace: Option<&str>,
        idx: usize,
    ) -> Result<String, String> {
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or("a named type without a name")?;
        let namespace = match object.get("namespace") {
            Some(Value::String(space)) => Some(space.as_str()),
            _ => namespace,
        };
        let full_name = full_name(name, namespace);
        if self.names.insert(full_name.clone(), idx).is_some() {
            return Err(format!("type {full_name} is defined twice"));
        }
        Ok(full_name)
    }

    fn reference(&mut self, name: &str, namespace: Option<&str>) -> Result<usize, String> {
        self.names
            .get(&full_name(name, namespace))
            .or_else(|| self.names.get(name))
            .copied()
            .ok_or_else(|| format!("unknown type {name:?}"))
    }
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(space) if !name.contains('.') && !space.is_empty() => format!("{space}.{name}"),
        _ => name.to_owned(),
    }
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}
