//! The Query API for cohorts: the project's saved cohorts
//! (`/cohorts/list`), and the members of one (`/engage` with
//! `filter_by_cohort`), paged as a stream.
//!
//! Every request needs the project id (service account, or the deprecated
//! API secret with a project id; [`Error::Config`] otherwise) and goes
//! through the client's [`QueryLimits`](crate::QueryLimits): Mixpanel allows
//! 5 concurrent queries and 60 per hour per project, and each page of
//! members is one query. A cohort of a million members is about 1000 pages,
//! about 17 hours at 60 per hour: prefer Mixpanel's cohort sync webhook
//! for large cohorts.
//!
//! Requests are as Mixpanel's OpenAPI spec has them: `POST`, `project_id`
//! in the query, Basic auth; `/cohorts/list` has no body (and says so with
//! `Content-Length: 0`), the member query a form body.
//!
//! Paging members follows Mixpanel's rule: there is another page while a
//! page holds as many members as the page size. The page size in force is
//! the answer's `page_size`, or, when an answer leaves it out, the last one
//! Mixpanel gave, or else its documented default of 1000
//! ([`DEFAULT_PAGE_SIZE`]); so a short page is the last whatever the size,
//! and no query (of 60 an hour) is spent on an empty page after it.
//!
//! Answers: 200 with the JSON documented by Mixpanel (a body that reports
//! `"status"` other than `"ok"` is [`Error::Rejected`], an unreadable one
//! [`Error::InvalidResponse`]; in the cohort list, a cohort that cannot be
//! read, such as one without an `id`, is skipped and logged, not a failure
//! of the list); 401/403 [`Error::Auth`], not retried; other
//! 4xx [`Error::Rejected`]; 429, 5xx, timeouts and connection errors are
//! retried by the transport, then [`Error::Unavailable`] or
//! [`Error::Transport`].

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue, Method, header};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::transport::{HttpRequest, HttpResponse};
use crate::{Client, Error};

/// Members per page when an answer does not say: Mixpanel's documented
/// `page_size` (the spec's example, and the only size it has shown).
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1000;

/// A saved cohort, as `/cohorts/list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// The cohort id, for [`Client::cohort_members`].
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its description, if it has one.
    pub description: Option<String>,
    /// Members when Mixpanel last counted.
    pub count: Option<u64>,
    /// Whether it is visible in Mixpanel's UI.
    pub is_visible: bool,
    /// When it was created, as Mixpanel writes it (`YYYY-MM-DD HH:MM:SS`,
    /// time zone unstated).
    pub created: Option<String>,
    /// The project it belongs to.
    pub project_id: Option<u64>,
}

/// Which members of a cohort to fetch, and how much of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberQuery {
    include_all_users: Option<bool>,
    output_properties: Option<Vec<String>>,
}

/// One member of a cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortMember {
    /// The member's canonical distinct id (Mixpanel may send it as a
    /// number; it is given here as text).
    pub distinct_id: String,
    /// The profile's properties (only those asked for with
    /// [`MemberQuery::output_properties`]; none for a member without a
    /// profile).
    pub properties: Map<String, Value>,
}

impl MemberQuery {
    /// Mixpanel's defaults: every member, with every property.
    pub fn new() -> MemberQuery {
        MemberQuery::default()
    }

    /// `include_all_users`: whether members without a user profile are
    /// included (Mixpanel's default: true).
    pub fn include_all_users(mut self, include: bool) -> MemberQuery {
        self.include_all_users = Some(include);
        self
    }

    /// `output_properties`: return only these profile properties, which
    /// can make pages much smaller and faster.
    pub fn output_properties<I, S>(mut self, names: I) -> MemberQuery
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.output_properties = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

#[derive(Deserialize)]
struct RawCohort {
    id: u64,
    #[serde(default)]
    name: String,
    description: Option<String>,
    count: Option<u64>,
    #[serde(default, deserialize_with = "flag")]
    is_visible: bool,
    created: Option<String>,
    project_id: Option<u64>,
}

/// The cohorts of a list that can be read, and a note of each one that
/// cannot (without an `id`, or with a field of the wrong type), which is
/// skipped rather than failing the list.
fn read_cohorts(entries: Vec<Value>) -> (Vec<Cohort>, Vec<String>) {
    let mut cohorts = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for (position, entry) in entries.into_iter().enumerate() {
        match RawCohort::deserialize(&entry) {
            Ok(raw) => cohorts.push(Cohort {
                id: raw.id,
                name: raw.name,
                description: raw.description,
                count: raw.count,
                is_visible: raw.is_visible,
                created: raw.created,
                project_id: raw.project_id,
            }),
            Err(error) => {
                let mut shown = entry.to_string();
                if let Some((cut, _)) = shown.char_indices().nth(200) {
                    shown.truncate(cut);
                    shown.push('…');
                }
                skipped.push(format!("cohort {position} ({error}): {shown}"));
            }
        }
    }
    (cohorts, skipped)
}

/// `is_visible` is documented as 0/1; accept a boolean too.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Bool(flag) => Ok(flag),
        Value::Number(number) => Ok(number.as_f64() != Some(0.0)),
        Value::Null => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "expected 0, 1 or a boolean, got {other}"
        ))),
    }
}

#[derive(Deserialize)]
struct MembersPage {
    page: Option<u64>,
    page_size: Option<usize>,
    session_id: Option<String>,
    status: Option<String>,
    error: Option<String>,
    results: Option<Vec<RawMember>>,
}

#[derive(Deserialize)]
struct RawMember {
    #[serde(rename = "$distinct_id", deserialize_with = "text_or_number")]
    distinct_id: String,
    #[serde(rename = "$properties", default)]
    properties: Map<String, Value>,
}

/// The spec types `$distinct_id` as an integer; real ones are strings.
fn text_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number as $distinct_id, got {other}"
        ))),
    }
}

/// Where the next page of members comes from.
enum Cursor {
    First,
    Next { session_id: String, page: u64 },
    Done,
}

/// The state of one cohort's member stream.
struct MemberPager {
    client: Client,
    cohort_id: u64,
    query: MemberQuery,
    cursor: Cursor,
    /// The last `page_size` Mixpanel gave, if any.
    page_size: Option<usize>,
    members: std::vec::IntoIter<CohortMember>,
}

impl Client {
    /// The project's saved cohorts (`POST /cohorts/list`). One query of the
    /// Query API budget.
    pub async fn list_cohorts(&self) -> Result<Vec<Cohort>, Error> {
        let project_id = self.query_project_id()?;
        let span = tracing::info_span!("mixpanel.cohorts_list", project = project_id);
        async {
            let url = format!(
                "{}/cohorts/list?project_id={project_id}",
                self.inner.query_url
            );
            let response = self.send_query("cohorts_list", url, None).await?;
            if !response.status.is_success() {
                return Err(response.into_error());
            }
            let entries: Vec<Value> =
                serde_json::from_slice(&response.body).map_err(|error| Error::InvalidResponse {
                    status: response.status.as_u16(),
                    message: format!("cannot read the cohort list: {error}"),
                })?;
            let (cohorts, skipped) = read_cohorts(entries);
            if let Some(first) = skipped.first() {
                tracing::warn!(
                    n_skipped = skipped.len(),
                    first = %first,
                    "Skipped cohorts of the list that cannot be read (such as one without an id)."
                );
            }
            tracing::debug!(n_cohorts = cohorts.len(), "Listed cohorts.");
            Ok(cohorts)
        }
        .instrument(span)
        .await
    }

    /// The members of cohort `cohort_id`, fetched page by page as the
    /// stream is read (`POST /engage` with `filter_by_cohort`, then
    /// `session_id` and `page`). Each page is one query of the Query API
    /// budget, so a slow reader spends no budget ahead of time.
    ///
    /// The first error ends the stream. Pin it to read it, e.g. with
    /// [`std::pin::pin!`] and `futures_util::TryStreamExt::try_next`.
    pub fn cohort_members(
        &self,
        cohort_id: u64,
        query: MemberQuery,
    ) -> impl Stream<Item = Result<CohortMember, Error>> + Send + use<> {
        let pager = MemberPager {
            client: self.clone(),
            cohort_id,
            query,
            cursor: Cursor::First,
            page_size: None,
            members: Vec::new().into_iter(),
        };
        futures_util::stream::try_unfold(pager, |mut pager| async move {
            loop {
                if let Some(member) = pager.members.next() {
                    return Ok(Some((member, pager)));
                }
                if let Cursor::Done = pager.cursor {
                    return Ok(None);
                }
                pager.fetch_page().await?;
            }
        })
    }

    /// The project id the Query API needs.
    fn query_project_id(&self) -> Result<&str, Error> {
        self.project_id().ok_or_else(|| {
            Error::Config(
                "the Query API needs a project id: use service account credentials, or an API secret with a project id".to_owned(),
            )
        })
    }

    /// Sends one query within the Query API budget.
    async fn send_query(
        &self,
        endpoint: &'static str,
        url: String,
        form: Option<String>,
    ) -> Result<HttpResponse, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            self.inner.credentials.authorization(),
        );
        if form.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        } else {
            // A POST without a body still says how long it is (RFC 9110
            // §8.6); reqwest sends no length for an empty body.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let _permit = self.inner.query_limiter.acquire().await;
        self.inner
            .transport
            .send(HttpRequest {
                endpoint,
                method: Method::POST,
                url,
                headers,
                body: form.map(Bytes::from).unwrap_or_default(),
                retry_when_unsure: true,
            })
            .await
    }
}

impl MemberPager {
    /// Fetches the page the cursor points at into `members`, and moves the
    /// cursor on.
    async fn fetch_page(&mut self) -> Result<(), Error> {
        let project_id = self.client.query_project_id()?;
        let page_idx = match &self.cursor {
            Cursor::Next { page, .. } => *page,
            _ => 0,
        };
        let span = tracing::info_span!(
            "mixpanel.cohort_members",
            project = project_id,
            cohort_id = self.cohort_id,
            page = page_idx,
        );
        let url = format!(
            "{}/engage?project_id={project_id}",
            self.client.inner.query_url
        );
        let form = self.form();
        let response = self
            .client
            .send_query("cohort_members", url, Some(form))
            .instrument(span.clone())
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        let status = response.status.as_u16();
        let invalid = |message: String| Error::InvalidResponse { status, message };
        let page: MembersPage = serde_json::from_slice(&response.body)
            .map_err(|error| invalid(format!("cannot read a page of cohort members: {error}")))?;
        if let Some(answer) = page.status.as_deref()
            && answer != "ok"
        {
            return Err(Error::Rejected {
                status,
                message: page.error.unwrap_or_else(|| format!("status {answer:?}")),
            });
        }
        let results = page
            .results
            .ok_or_else(|| invalid("a page of cohort members without results".to_owned()))?;
        let n_members = results.len();
        // Mixpanel's rule: there is another page while a page is full, at
        // the page size in force (see the module doc).
        if page.page_size.is_some() {
            self.page_size = page.page_size;
        }
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        let is_full = n_members > 0 && n_members >= page_size;
        self.cursor = match (is_full, page.session_id) {
            (false, _) => Cursor::Done,
            (true, Some(session_id)) => Cursor::Next {
                session_id,
                page: page.page.unwrap_or(page_idx) + 1,
            },
            (true, None) => {
                return Err(invalid(
                    "a full page of cohort members without a session_id for the next".to_owned(),
                ));
            }
        };
        span.in_scope(|| tracing::debug!(n_members, "Fetched cohort members."));
        self.members = results
            .into_iter()
            .map(|raw| CohortMember {
                distinct_id: raw.distinct_id,
                properties: raw.properties,
            })
            .collect::<Vec<_>>()
            .into_iter();
        Ok(())
    }

    /// The form body of the next request.
    fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair(
            "filter_by_cohort",
            &serde_json::json!({ "id": self.cohort_id }).to_string(),
        );
        if let Some(include) = self.query.include_all_users {
            form.append_pair("include_all_users", if include { "true" } else { "false" });
        }
        if let Some(names) = &self.query.output_properties {
            form.append_pair(
                "output_properties",
                &serde_json::to_string(names).expect("strings always serialize"),
            );
        }
        if let Cursor::Next { session_id, page } = &self.cursor {
            form.append_pair("session_id", session_id);
            form.append_pair("page", &page.to_string());
        }
        form.finish()
    }
}

#[cfg(test)]
mod tests;
