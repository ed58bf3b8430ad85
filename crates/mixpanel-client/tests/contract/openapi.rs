//! Checks recorded HTTP requests against Mixpanel's own OpenAPI documents
//! (`tests/openapi/`): method, path, query parameters, headers, the auth
//! scheme the operation's `security` allows, the content type, and the body
//! against the operation's request body schema.
//!
//! The schema validator covers the subset of OpenAPI 3.0 schemas that the
//! two documents use (`type` with `nullable`, `enum`, `properties`,
//! `required`, `additionalProperties`, `items`, `minItems`/`maxItems`,
//! `minProperties`/`maxProperties`, `minimum`/`maximum`, `oneOf`, `anyOf`,
//! `allOf`, `$ref`), and refuses any other keyword rather than skipping
//! it, so that a spec update using something new fails loudly instead of
//! passing unchecked. Annotations (`description`, `default`, `format`, …)
//! are ignored, as JSON Schema does.

use std::io::Read as _;

use serde_json::{Map, Value};

/// One of the vendored OpenAPI documents.
pub(crate) struct Spec {
    document: Value,
    /// The path of the first server's URL (`/api/query` for the Query API).
    base_path: String,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    /// Names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl From<&wiremock::Request> for Recorded {
    fn from(request: &wiremock::Request) -> Recorded {
        Recorded {
            method: request.method.to_string(),
            path: request.url.path().to_owned(),
            query: request.url.query_pairs().into_owned().collect(),
            headers: request
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: request.body.clone(),
        }
    }
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Schema keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "example",
    "examples",
    "format",
    "readOnly",
    "writeOnly",
    "deprecated",
];

impl Spec {
    /// Loads `tests/openapi/<name>.openapi.yaml`.
    pub(crate) fn load(name: &str) -> Spec {
        let file = format!(
            "{}/tests/openapi/{name}.openapi.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&file).unwrap_or_else(|error| {
            panic!("cannot read {file}: {error} (the specs are test data of the repository)")
        });
        let document: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|error| panic!("{file} is not YAML: {error}"));
        let server = document["servers"][0]["url"]
            .as_str()
            .expect("the spec names a server");
        // `https://{host}.com/api/query` → `/api/query`.
        let after_scheme = server.split_once("://").map_or(server, |(_, rest)| rest);
        let base_path = after_scheme
            .find('/')
            .map_or(String::new(), |slash| after_scheme[slash..].to_owned());
        Spec {
            document,
            base_path,
        }
    }

    /// The operation at `path_key` (e.g. `/engage#profile-set`) for `method`.
    pub(crate) fn operation(&self, path_key: &str, method: &str) -> &Value {
        let operation = &self.document["paths"][path_key][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "the spec has no {method} {path_key}");
        operation
    }

    /// Follows a local `$ref`.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        let mut value = value;
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $refs are supported, got {reference}"));
            value = self
                .document
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
        }
        value
    }

    /// What is wrong with `request` as a call of every operation in
    /// `path_keys` (several for `/engage`, one per update kind in the
    /// body: the request must suit each). Empty when it matches.
    pub(crate) fn check(&self, path_keys: &[&str], request: &Recorded) -> Vec<String> {
        let mut problems = Vec::new();
        assert!(!path_keys.is_empty());
        for path_key in path_keys {
            let operation = self.operation(path_key, &request.method);
            let spec_path = path_key.split('#').next().unwrap_or(path_key);
            let expected_path = format!("{}{spec_path}", self.base_path);
            if request.path != expected_path {
                problems.push(format!(
                    "{path_key}: path {} is not {expected_path}",
                    request.path
                ));
            }
            self.check_parameters(path_key, operation, request, &mut problems);
            self.check_security(path_key, operation, request, &mut problems);
        }
        // The body: against the first operation's content types; the items
        // of an `/engage` body are checked each against its own operation.
        let operation = self.operation(path_keys[0], &request.method);
        self.check_body(path_keys, operation, request, &mut problems);
        problems
    }

    fn parameters<'a>(&'a self, operation: &'a Value) -> Vec<&'a Value> {
        operation["parameters"]
            .as_array()
            .map(|parameters| parameters.iter().map(|p| self.resolve(p)).collect())
            .unwrap_or_default()
    }

    fn check_parameters(
        &self,
        path_key: &str,
        operation: &Value,
        request: &Recorded,
        problems: &mut Vec<String>,
    ) {
        let parameters = self.parameters(operation);
        let declared = |location: &str, name: &str| {
            parameters.iter().copied().find(|parameter| {
                parameter["in"] == location
                    && parameter["name"]
                        .as_str()
                        .is_some_and(|declared| declared.eq_ignore_ascii_case(name))
            })
        };
        for (name, value) in &request.query {
            match declared("query", name) {
                None => problems.push(format!(
                    "{path_key}: query parameter {name:?} is not in the spec"
                )),
                Some(parameter) => {
                    let value = typed(&parameter["schema"], value, self);
                    self.validate(
                        &parameter["schema"],
                        &value,
                        &format!("{path_key}: query parameter {name}"),
                        problems,
                    );
                }
            }
        }
        for parameter in &parameters {
            let name = parameter["name"].as_str().unwrap_or_default();
            let required = parameter["required"].as_bool().unwrap_or(false);
            match parameter["in"].as_str() {
                Some("query") if required && !request.query.iter().any(|(key, _)| key == name) => {
                    problems.push(format!(
                        "{path_key}: required query parameter {name:?} is missing"
                    ));
                }
                Some("header") => match request.header(name) {
                    Some(value) => {
                        let value = typed(&parameter["schema"], value, self);
                        self.validate(
                            &parameter["schema"],
                            &value,
                            &format!("{path_key}: header {name}"),
                            problems,
                        );
                    }
                    None if required => {
                        problems.push(format!("{path_key}: required header {name:?} is missing"))
                    }
                    None => {}
                },
                _ => {}
            }
        }
    }

    /// The request must meet one of the operation's security requirements
    /// (its own `security`, or the document's). Where the only requirement
    /// is `{}` (no credentials, as for `/engage` updates), credentials must
    /// not be sent: they would go where nothing takes them.
    fn check_security(
        &self,
        path_key: &str,
        operation: &Value,
        request: &Recorded,
        problems: &mut Vec<String>,
    ) {
        let requirements = operation
            .get("security")
            .or_else(|| self.document.get("security"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let authorization = request.header("authorization");
        let scheme = authorization
            .and_then(|value| value.split_whitespace().next())
            .map(str::to_ascii_lowercase);
        let anonymous_allowed = requirements
            .iter()
            .any(|requirement| requirement.as_object().is_some_and(Map::is_empty));
        let met = requirements.iter().any(|requirement| {
            let Some(schemes) = requirement.as_object() else {
                return false;
            };
            if schemes.is_empty() {
                return scheme.is_none();
            }
            schemes.keys().all(|name| {
                let definition = &self.document["components"]["securitySchemes"][name];
                definition["type"] == "http"
                    && scheme.as_deref()
                        == definition["scheme"]
                            .as_str()
                            .map(str::to_ascii_lowercase)
                            .as_deref()
            })
        });
        if !met {
            problems.push(format!(
                "{path_key}: Authorization {:?} meets none of the security requirements {}",
                scheme.as_deref().unwrap_or("(none)"),
                Value::Array(requirements.clone())
            ));
        }
        let only_anonymous = anonymous_allowed && requirements.len() == 1;
        if only_anonymous && authorization.is_some() {
            problems.push(format!(
                "{path_key}: sends credentials, though the operation takes none"
            ));
        }
    }

    fn check_body(
        &self,
        path_keys: &[&str],
        operation: &Value,
        request: &Recorded,
        problems: &mut Vec<String>,
    ) {
        let path_key = path_keys[0];
        let Some(request_body) = operation.get("requestBody").map(|body| self.resolve(body)) else {
            // No body in the spec: none is sent, and a POST says so with
            // `Content-Length: 0` (RFC 9110 §8.6: a request whose method
            // gives content a meaning should carry Content-Length).
            if !request.body.is_empty() {
                problems.push(format!(
                    "{path_key}: sends a body of {} bytes, the spec has none",
                    request.body.len()
                ));
            }
            if request.method == "POST" && request.header("content-length") != Some("0") {
                problems.push(format!(
                    "{path_key}: a POST without a body must say Content-Length: 0, got {:?}",
                    request.header("content-length")
                ));
            }
            return;
        };
        let Some(content_type) = request.header("content-type") else {
            problems.push(format!("{path_key}: no Content-Type"));
            return;
        };
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Some(media) = request_body["content"].get(&media_type) else {
            problems.push(format!(
                "{path_key}: Content-Type {media_type} is not one of {}",
                request_body["content"]
                    .as_object()
                    .map(|content| content.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ));
            return;
        };
        if request_body["required"] == true && request.body.is_empty() {
            problems.push(format!("{path_key}: the body is required"));
            return;
        }
        let body = match request.header("content-encoding") {
            Some("gzip") => {
                let mut inflated = Vec::new();
                if flate2::read::GzDecoder::new(&request.body[..])
                    .read_to_end(&mut inflated)
                    .is_err()
                {
                    problems.push(format!("{path_key}: Content-Encoding gzip, but not gzip"));
                    return;
                }
                inflated
            }
            Some(other) => {
                problems.push(format!("{path_key}: unexpected Content-Encoding {other}"));
                return;
            }
            None => request.body.clone(),
        };
        match media_type.as_str() {
            "application/json" => {
                let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                    problems.push(format!("{path_key}: the body is not JSON"));
                    return;
                };
                if path_keys.iter().all(|key| key.starts_with("/engage#")) {
                    self.check_engage_updates(request, &value, problems);
                } else {
                    self.validate(
                        &media["schema"],
                        &value,
                        &format!("{path_key}: body"),
                        problems,
                    );
                }
            }
            "application/x-www-form-urlencoded" => {
                let schema = self.resolve(&media["schema"]);
                let mut form = Map::new();
                for (name, text) in form_urlencoded::parse(&body).into_owned() {
                    let Some(field_schema) = schema["properties"].get(&name) else {
                        problems.push(format!(
                            "{path_key}: form field {name:?} is not in the spec"
                        ));
                        continue;
                    };
                    form.insert(name, typed(field_schema, &text, self));
                }
                self.validate(
                    schema,
                    &Value::Object(form),
                    &format!("{path_key}: form"),
                    problems,
                );
            }
            other => problems.push(format!("{path_key}: no checker for {other} bodies")),
        }
    }

    /// An `/engage` body: a non-empty array, each update checked against
    /// the schema of its own operation (`$set` against
    /// `/engage#profile-set`, …), wrapped as that operation's array.
    fn check_engage_updates(&self, request: &Recorded, body: &Value, problems: &mut Vec<String>) {
        let Some(updates) = body.as_array() else {
            problems.push("/engage: the body is not a JSON array".to_owned());
            return;
        };
        if updates.is_empty() {
            problems.push("/engage: the body is an empty array".to_owned());
        }
        for (index, update) in updates.iter().enumerate() {
            let Some(path_key) = engage_operation(update) else {
                problems.push(format!(
                    "/engage: update {index} has no single operation: {update}"
                ));
                continue;
            };
            let operation = self.operation(path_key, &request.method);
            let schema =
                &self.resolve(&operation["requestBody"])["content"]["application/json"]["schema"];
            self.validate(
                schema,
                &Value::Array(vec![update.clone()]),
                &format!("{path_key}: update {index}"),
                problems,
            );
        }
    }

    /// Validates `value` against `schema`, adding a line per failure.
    pub(crate) fn validate(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        problems: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        let Some(keywords) = schema.as_object() else {
            if schema != &Value::Bool(true) {
                problems.push(format!("{at}: unsupported schema {schema}"));
            }
            return;
        };
        if value.is_null() && schema["nullable"] == true {
            return;
        }
        for (keyword, argument) in keywords {
            match keyword.as_str() {
                "type" => {
                    let expected = argument.as_str().unwrap_or_default();
                    if !has_type(value, expected) {
                        problems.push(format!("{at}: {value} is not of type {expected}"));
                    }
                }
                "nullable" => {}
                "enum" => {
                    let allowed = argument.as_array().cloned().unwrap_or_default();
                    if !allowed.contains(value) {
                        problems.push(format!("{at}: {value} is not one of {argument}"));
                    }
                }
                "required" => {
                    if let Some(object) = value.as_object() {
                        for name in argument.as_array().into_iter().flatten() {
                            let name = name.as_str().unwrap_or_default();
                            if !object.contains_key(name) {
                                problems
                                    .push(format!("{at}: required property {name:?} is missing"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let (Some(object), Some(properties)) =
                        (value.as_object(), argument.as_object())
                    {
                        for (name, property_schema) in properties {
                            if let Some(property) = object.get(name) {
                                self.validate(
                                    property_schema,
                                    property,
                                    &format!("{at}.{name}"),
                                    problems,
                                );
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(object) = value.as_object() {
                        let declared = schema.get("properties").and_then(Value::as_object);
                        for (name, property) in object {
                            if declared.is_some_and(|declared| declared.contains_key(name)) {
                                continue;
                            }
                            match argument {
                                Value::Bool(true) => {}
                                Value::Bool(false) => {
                                    problems.push(format!("{at}: property {name:?} is not allowed"))
                                }
                                additional => self.validate(
                                    additional,
                                    property,
                                    &format!("{at}.{name}"),
                                    problems,
                                ),
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        for (index, item) in items.iter().enumerate() {
                            self.validate(argument, item, &format!("{at}[{index}]"), problems);
                        }
                    }
                }
                "minItems" | "maxItems" => {
                    if let Some(items) = value.as_array() {
                        let bound = argument.as_u64().unwrap_or_default() as usize;
                        let fails = if keyword == "minItems" {
                            items.len() < bound
                        } else {
                            items.len() > bound
                        };
                        if fails {
                            problems.push(format!(
                                "{at}: {} items breaks {keyword} {bound}",
                                items.len()
                            ));
                        }
                    }
                }
                "minProperties" | "maxProperties" => {
                    if let Some(object) = value.as_object() {
                        let bound = argument.as_u64().unwrap_or_default() as usize;
                        let fails = if keyword == "minProperties" {
                            object.len() < bound
                        } else {
                            object.len() > bound
                        };
                        if fails {
                            problems.push(format!(
                                "{at}: {} properties breaks {keyword} {bound}",
                                object.len()
                            ));
                        }
                    }
                }
                "minimum" | "maximum" => {
                    if let (Some(number), Some(bound)) = (value.as_f64(), argument.as_f64()) {
                        let fails = if keyword == "minimum" {
                            number < bound
                        } else {
                            number > bound
                        };
                        if fails {
                            problems.push(format!("{at}: {value} breaks {keyword} {bound}"));
                        }
                    }
                }
                "oneOf" | "anyOf" | "allOf" => {
                    let branches = argument.as_array().cloned().unwrap_or_default();
                    let failures: Vec<Vec<String>> = branches
                        .iter()
                        .map(|branch| {
                            let mut branch_problems = Vec::new();
                            self.validate(branch, value, at, &mut branch_problems);
                            branch_problems
                        })
                        .collect();
                    let n_passing = failures.iter().filter(|failure| failure.is_empty()).count();
                    let fails = match keyword.as_str() {
                        "oneOf" => n_passing != 1,
                        "anyOf" => n_passing == 0,
                        _ => n_passing != branches.len(),
                    };
                    if fails {
                        problems.push(format!(
                            "{at}: {value} matches {n_passing} of the {} {keyword} branches",
                            branches.len()
                        ));
                    }
                }
                annotation if ANNOTATIONS.contains(&annotation) => {}
                unknown => problems.push(format!(
                    "{at}: the checker does not know the schema keyword {unknown:?}; teach it"
                )),
            }
        }
    }
}

/// The operation an `/engage` update performs, as the spec's path key.
pub(crate) fn engage_operation(update: &Value) -> Option<&'static str> {
    const OPERATIONS: &[(&str, &str)] = &[
        ("$set", "/engage#profile-set"),
        ("$set_once", "/engage#profile-set-once"),
        ("$add", "/engage#profile-numerical-add"),
        ("$union", "/engage#profile-union"),
        ("$append", "/engage#profile-list-append"),
        ("$remove", "/engage#profile-list-remove"),
        ("$unset", "/engage#profile-unset"),
        ("$delete", "/engage#profile-delete"),
    ];
    let object = update.as_object()?;
    let mut found = OPERATIONS
        .iter()
        .filter(|(key, _)| object.contains_key(*key))
        .map(|(_, path_key)| *path_key);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// A query, header or form value read as its schema's type: integers and
/// booleans parsed, arrays (Mixpanel's form fields such as
/// `output_properties`, described as "a JSON array") parsed as JSON;
/// text that does not parse stays text, for the validator to refuse.
fn typed(schema: &Value, text: &str, spec: &Spec) -> Value {
    let schema = spec.resolve(schema);
    let kind = schema["type"].as_str().or_else(|| {
        // `allOf: [{type: integer, …}, {description}]`
        schema["allOf"]
            .as_array()
            .and_then(|branches| branches.iter().find_map(|branch| branch["type"].as_str()))
    });
    match kind {
        Some("integer" | "number") => serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Some("boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        Some("array" | "object") => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        _ => Value::String(text.to_owned()),
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
        }
        "null" => value.is_null(),
        _ => false,
    }
}
