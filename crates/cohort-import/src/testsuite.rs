//! A Braze stand-in for tests (feature `testsuite`): a wiremock server
//! that applies `/users/track` array-attribute writes and partner cohort
//! changes to an in-memory membership, so that a test can compare Braze's
//! final membership with Mixpanel's, and that fails on request: scripted
//! answers (429 with headers, 5xx, 401) and users it refuses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The stand-in's state, shared with the test.
#[derive(Clone, Default)]
pub struct BrazeDouble {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// (user, attribute) → values, for `/users/track`.
    attributes: BTreeMap<(String, String), BTreeSet<String>>,
    /// cohort id → external ids, for the partner API.
    partner_cohorts: BTreeMap<String, BTreeSet<String>>,
    /// cohort id → name, for the partner API.
    partner_names: BTreeMap<String, String>,
    /// Answers to give before applying anything, in order.
    scripted: VecDeque<ResponseTemplate>,
    /// Users (`external_id:…` or `email:…`) whose objects are refused.
    refused_users: BTreeSet<String>,
    requests: usize,
    objects: usize,
    /// How long each answer waits (a slow Braze).
    delay: Option<std::time::Duration>,
}

impl BrazeDouble {
    /// Starts a server with the stand-in mounted; give `server.uri()` to
    /// the client as its base URL.
    pub async fn start() -> (MockServer, BrazeDouble) {
        let server = MockServer::start().await;
        let double = BrazeDouble::default();
        Mock::given(method("POST"))
            .and(path("/users/track"))
            .respond_with(double.clone())
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/partners/[A-Za-z0-9_-]+/cohorts(/users)?$"))
            .respond_with(double.clone())
            .mount(&server)
            .await;
        (server, double)
    }

    /// The next requests get these answers, one each, before any is applied.
    pub fn script(&self, answers: impl IntoIterator<Item = ResponseTemplate>) {
        self.lock().scripted.extend(answers);
    }

    /// Forgets the answers scripted and not yet given.
    pub fn clear_script(&self) {
        self.lock().scripted.clear();
    }

    /// Objects for this user (`external_id:u1`, `email:a@b.c`) are refused
    /// with a per-object error.
    pub fn refuse_user(&self, user: &str) {
        self.lock().refused_users.insert(user.to_owned());
    }

    /// Every answer from now on waits this long (a slow Braze; `None`:
    /// answer at once).
    pub fn set_delay(&self, delay: Option<std::time::Duration>) {
        self.lock().delay = delay;
    }

    /// Users (`external_id:…`, `email:…`) whose `attribute` holds `value`.
    pub fn members(&self, attribute: &str, value: &str) -> BTreeSet<String> {
        self.lock()
            .attributes
            .iter()
            .filter(|((_, name), values)| name == attribute && values.contains(value))
            .map(|((user, _), _)| user.clone())
            .collect()
    }

    /// The values of `attribute` for `user`.
    pub fn values(&self, user: &str, attribute: &str) -> BTreeSet<String> {
        self.lock()
            .attributes
            .get(&(user.to_owned(), attribute.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// External ids in a partner cohort.
    pub fn partner_members(&self, cohort_id: &str) -> BTreeSet<String> {
        self.lock()
            .partner_cohorts
            .get(cohort_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The name a partner cohort was given last.
    pub fn partner_name(&self, cohort_id: &str) -> Option<String> {
        self.lock().partner_names.get(cohort_id).cloned()
    }

    /// Requests answered, scripted ones included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Attribute objects applied or refused.
    pub fn objects(&self) -> usize {
        self.lock().objects
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Respond for BrazeDouble {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let delay = self.lock().delay;
        let answer = self.answer(request);
        match delay {
            Some(delay) => answer.set_delay(delay),
            None => answer,
        }
    }
}

impl BrazeDouble {
    /// Applies a request (unless an answer is scripted) and answers it.
    fn answer(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.lock();
        state.requests += 1;
        if let Some(answer) = state.scripted.pop_front() {
            return answer;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return ResponseTemplate::new(400).set_body_json(json!({"message": "Invalid JSON"}));
        };
        let url_path = request.url.path();
        if url_path == "/users/track" {
            return track(&mut state, &body);
        }
        let cohort_id = body["cohort_id"].as_str().unwrap_or_default().to_owned();
        if url_path.ends_with("/users") {
            for change in body["cohort_changes"].as_array().into_iter().flatten() {
                let is_remove = change["should_remove"].as_bool().unwrap_or(false);
                let members = state.partner_cohorts.entry(cohort_id.clone()).or_default();
                for id in change["user_ids"].as_array().into_iter().flatten() {
                    let id = id.as_str().unwrap_or_default().to_owned();
                    if is_remove {
                        members.remove(&id);
                    } else {
                        members.insert(id);
                    }
                }
            }
        } else {
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            state.partner_names.insert(cohort_id, name);
        }
        ResponseTemplate::new(201).set_body_json(json!({"message": "success"}))
    }
}

/// Applies a `/users/track` body, refusing the configured users.
fn track(state: &mut State, body: &Value) -> ResponseTemplate {
    let objects = body["attributes"].as_array().cloned().unwrap_or_default();
    if objects.len() > 75 {
        return ResponseTemplate::new(400)
            .set_body_json(json!({"message": "Max Input Length Exceeded"}));
    }
    let mut errors = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        state.objects += 1;
        let user = match (object["external_id"].as_str(), object["email"].as_str()) {
            (Some(id), _) => format!("external_id:{id}"),
            (None, Some(email)) => format!("email:{email}"),
            (None, None) => {
                errors.push(json!({"type": "'external_id' or 'braze_id' or 'user_alias' is required", "input_array": "attributes", "index": index}));
                continue;
            }
        };
        if state.refused_users.contains(&user) {
            errors.push(
                json!({"type": "user is not allowed", "input_array": "attributes", "index": index}),
            );
            continue;
        }
        let Some(fields) = object.as_object() else {
            continue;
        };
        for (name, value) in fields {
            let Some(operations) = value.as_object() else {
                continue;
            };
            let values = state
                .attributes
                .entry((user.clone(), name.clone()))
                .or_default();
            for added in operations
                .get("add")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                values.insert(added.as_str().unwrap_or_default().to_owned());
            }
            for removed in operations
                .get("remove")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                values.remove(removed.as_str().unwrap_or_default());
            }
        }
    }
    let mut answer =
        json!({"message": "success", "attributes_processed": objects.len() - errors.len()});
    if !errors.is_empty() {
        answer["errors"] = Value::Array(errors);
    }
    ResponseTemplate::new(201).set_body_json(answer)
}
