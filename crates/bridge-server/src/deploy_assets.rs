//! Checks of the operations assets in `deploy/` against the metrics the
//! bridge really exposes (tests only).
//!
//! The Grafana dashboard (`deploy/grafana/braze-mixpanel-bridge.json`), the
//! Prometheus alerting rules (`deploy/prometheus/alerts.yml`) and their
//! promtool tests (`deploy/prometheus/alerts_test.yml`) name metrics and
//! labels in PromQL. A renamed or misspelled metric would not fail
//! `promtool` (an unknown name is an empty result, not an error), so this
//! module reads every PromQL expression of those files, finds the metric
//! names, label names and function names in it with a small lexer, and
//! compares them with what [`Metrics::render`] writes for `/metrics`.
//! It also checks that each alert says how bad it is and links a section of
//! `docs/operations.md`, and that `docs/operations.md` lists every metric.
//!
//! YAML is read line by line (the rules file keeps to one shape: an
//! `expr:` on one line or as a folded block), so no YAML crate is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::metrics::Metrics;

/// Metrics that are not the bridge's but that the assets may name:
/// Prometheus's own series for the scrape and for alerts.
const FOREIGN_METRICS: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// PromQL's aggregation operators: followed by `(`, `by` or `without`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// PromQL's functions (Prometheus 2.x), always followed by `(`.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Keywords that take a parenthesised list of label names.
const GROUPING_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and literals that are not metric names.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "offset", "bool", "atan2", "Inf", "NaN", "inf", "nan",
];

/// The exposed series: each sample name with the label names it carries.
type Exposed = BTreeMap<String, BTreeSet<String>>;

/// What `/metrics` exposes once every labelled family has a series:
/// families with labels are written without samples until first used.
fn exposed() -> Exposed {
    let metrics = Metrics::new();
    metrics.record_ingest(200, Duration::from_millis(2));
    metrics.record_unavailable("spool_full");
    metrics.record_import("200", Duration::from_millis(50), 1);
    metrics
        .delivered_events
        .get_or_create(&vec![("project", "default".to_owned())])
        .inc();
    metrics
        .dead_lettered_events
        .get_or_create(&vec![("reason", "refused_by_mixpanel".to_owned())])
        .inc();
    metrics
        .discarded_events
        .get_or_create(&vec![
            ("reason", "filtered".to_owned()),
            ("intentional", "true".to_owned()),
        ])
        .inc();
    metrics
        .archive_batches
        .get_or_create(&vec![("outcome", "written".to_owned())])
        .inc();
    metrics.refresh_listener(&crate::listener::ListenerStats::default());
    metrics.refresh_cohorts(&cohort_import::stats::CohortStats::default(), &[], 0);
    metrics
        .cohort_last_sync_age_seconds
        .get_or_create(&vec![("cohort", "default/1".to_owned())])
        .set(60);
    metrics.refresh_delivery(
        &[crate::delivery::ProjectStatus {
            name: "default".to_owned(),
            state: "delivering",
            paused_reason: None,
        }],
        0,
    );
    let text = metrics.render();

    let mut samples = Exposed::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').expect("# TYPE name kind");
            families.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let labels = samples.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let end = line.find('}').expect("labels are closed");
            for pair in line[name_end + 1..end].split(',') {
                let (label, _) = pair.split_once('=').expect("label=value");
                labels.insert(label.to_owned());
            }
        }
    }
    // Every family must show its samples, so that names are judged by what
    // Prometheus really scrapes (`_total`, `_bucket`, ...), not guessed.
    assert!(!families.is_empty(), "no family in:\n{text}");
    for (family, kind) in &families {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            other => panic!("{family}: a {other}: teach this test its sample names"),
        };
        for suffix in suffixes {
            assert!(
                samples.contains_key(&format!("{family}{suffix}")),
                "{family} ({kind}) has no {family}{suffix} sample: record one in `exposed()`:\n{text}"
            );
        }
    }
    samples
}

/// One token of PromQL.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A name: a metric, a function, a keyword or a label.
    Ident(String),
    /// `{...}`: the label names of its matchers.
    Matchers(Vec<String>),
    /// `[...]`: a range or subquery; its content is durations.
    Range,
    /// A number, a duration, a string or a Grafana variable (`$job`).
    Value,
    /// Any other character: `(`, `)`, `,`, operators.
    Punct(char),
}

/// Splits PromQL (with Grafana's `$variables`) into tokens.
fn lex(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut idx = 0;
    let is_ident_start = |ch: char| ch.is_ascii_alphabetic() || ch == '_' || ch == ':';
    let is_ident = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':';
    while idx < chars.len() {
        let ch = chars[idx];
        if ch.is_whitespace() {
            idx += 1;
        } else if ch == '"' || ch == '\'' || ch == '`' {
            idx = skip_string(&chars, idx)?;
            tokens.push(Token::Value);
        } else if ch == '$' {
            idx += 1;
            if chars.get(idx) == Some(&'{') {
                while idx < chars.len() && chars[idx] != '}' {
                    idx += 1;
                }
                idx += 1;
            } else {
                while idx < chars.len() && is_ident(chars[idx]) {
                    idx += 1;
                }
            }
            tokens.push(Token::Value);
        } else if ch.is_ascii_digit()
            || (ch == '.' && chars.get(idx + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (`0.99`, `1e3`, `5m`, `1h30m`).
            while idx < chars.len() && (chars[idx].is_ascii_alphanumeric() || chars[idx] == '.') {
                idx += 1;
            }
            tokens.push(Token::Value);
        } else if is_ident_start(ch) {
            let start = idx;
            while idx < chars.len() && is_ident(chars[idx]) {
                idx += 1;
            }
            tokens.push(Token::Ident(chars[start..idx].iter().collect()));
        } else if ch == '{' {
            let mut labels = Vec::new();
            idx += 1;
            loop {
                while idx < chars.len() && (chars[idx].is_whitespace() || chars[idx] == ',') {
                    idx += 1;
                }
                match chars.get(idx) {
                    None => return Err(format!("unclosed {{ in {expr}")),
                    Some('}') => {
                        idx += 1;
                        break;
                    }
                    Some(&ch) if is_ident_start(ch) => {
                        let start = idx;
                        while idx < chars.len() && is_ident(chars[idx]) {
                            idx += 1;
                        }
                        labels.push(chars[start..idx].iter().collect());
                        while idx < chars.len() && "=!~ ".contains(chars[idx]) {
                            idx += 1;
                        }
                        match chars.get(idx) {
                            Some('"' | '\'' | '`') => idx = skip_string(&chars, idx)?,
                            _ => return Err(format!("a matcher without a string in {expr}")),
                        }
                    }
                    Some(other) => {
                        return Err(format!("unexpected {other:?} in matchers of {expr}"));
                    }
                }
            }
            tokens.push(Token::Matchers(labels));
        } else if ch == '[' {
            while idx < chars.len() && chars[idx] != ']' {
                idx += 1;
            }
            if idx == chars.len() {
                return Err(format!("unclosed [ in {expr}"));
            }
            idx += 1;
            tokens.push(Token::Range);
        } else {
            tokens.push(Token::Punct(ch));
            idx += 1;
        }
    }
    Ok(tokens)
}

/// The index after the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut idx = start + 1;
    while idx < chars.len() {
        if chars[idx] == '\\' && quote != '`' {
            idx += 2;
        } else if chars[idx] == quote {
            return Ok(idx + 1);
        } else {
            idx += 1;
        }
    }
    Err("an unclosed string".to_owned())
}

/// What one expression names.
#[derive(Debug, Default)]
struct Names {
    /// Metric names, each with the label names of its matchers.
    metrics: Vec<(String, Vec<String>)>,
    /// Label names of `by`, `without`, `on`, `ignoring`, `group_*` lists.
    grouping: Vec<String>,
}

/// Finds the metric, label and function names of a PromQL expression;
/// an unknown function or a stray token is an error.
fn names(expr: &str) -> Result<Names, String> {
    let tokens = lex(expr)?;
    let mut names = Names::default();
    let mut idx = 0;
    while idx < tokens.len() {
        match &tokens[idx] {
            Token::Ident(ident) => {
                let next = tokens.get(idx + 1);
                if GROUPING_KEYWORDS.contains(&ident.as_str()) {
                    if next == Some(&Token::Punct('(')) {
                        idx += 2;
                        loop {
                            match tokens.get(idx) {
                                Some(Token::Ident(label)) => names.grouping.push(label.clone()),
                                Some(Token::Punct(',')) => {}
                                Some(Token::Punct(')')) => break,
                                other => {
                                    return Err(format!(
                                        "{other:?} in the label list of {ident} in {expr}"
                                    ));
                                }
                            }
                            idx += 1;
                        }
                    }
                } else if KEYWORDS.contains(&ident.as_str()) {
                    // Set operators (`or (`), `offset`, `bool`, literals.
                } else if AGGREGATIONS.contains(&ident.as_str()) {
                    let valid = match next {
                        Some(Token::Punct('(')) => true,
                        Some(Token::Ident(word)) => word == "by" || word == "without",
                        _ => false,
                    };
                    if !valid {
                        return Err(format!("aggregation {ident} without arguments in {expr}"));
                    }
                } else if next == Some(&Token::Punct('(')) {
                    if !FUNCTIONS.contains(&ident.as_str()) {
                        return Err(format!("unknown function {ident}() in {expr}"));
                    }
                } else {
                    let labels = match next {
                        Some(Token::Matchers(labels)) => {
                            idx += 1;
                            labels.clone()
                        }
                        _ => Vec::new(),
                    };
                    names.metrics.push((ident.clone(), labels));
                }
            }
            Token::Matchers(_) => {
                return Err(format!(
                    "matchers without a metric name (`{{__name__=...}}`) in {expr}: name the metric"
                ));
            }
            Token::Range | Token::Value | Token::Punct(_) => {}
        }
        idx += 1;
    }
    Ok(names)
}

/// What is wrong with the names `expr` uses, judged against `exposed`.
fn check_expr(expr: &str, exposed: &Exposed) -> Vec<String> {
    let names = match names(expr) {
        Ok(names) => names,
        Err(error) => return vec![error],
    };
    let mut problems = Vec::new();
    if names.metrics.is_empty() {
        problems.push(format!("no metric in {expr}"));
    }
    let mut known_labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    let mut foreign = false;
    for (metric, matcher_labels) in &names.metrics {
        if FOREIGN_METRICS.contains(&metric.as_str()) {
            foreign = true;
            continue;
        }
        let Some(labels) = exposed.get(metric) else {
            problems.push(format!("{metric} is not a metric of /metrics, in {expr}"));
            continue;
        };
        known_labels.extend(labels.iter().map(String::as_str));
        for label in matcher_labels {
            if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!("{metric} has no label {label}, in {expr}"));
            }
        }
    }
    // Grouping labels must come from the metrics of the expression (those
    // of Prometheus's own series are not known here).
    if !foreign {
        for label in &names.grouping {
            if !known_labels.contains(label.as_str()) {
                problems.push(format!(
                    "no metric of the expression has the label {label}, in {expr}"
                ));
            }
        }
    }
    problems
}

/// A file of the repository, by its path from the workspace root.
fn read(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Each PromQL expression of the dashboard, with where it is.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(value: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(object) => {
                let here = object
                    .get("title")
                    .or_else(|| object.get("name"))
                    .and_then(serde_json::Value::as_str)
                    .map_or_else(|| at.to_owned(), |title| format!("{at} / {title}"));
                for (key, child) in object {
                    match (key.as_str(), child) {
                        ("expr", serde_json::Value::String(expr)) => {
                            out.push((here.clone(), expr.clone()));
                        }
                        _ => walk(child, &here, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, at, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "dashboard", &mut out);
    out
}

/// The template variables of the dashboard that query Prometheus:
/// `(name, label_values(selector, label))`.
fn dashboard_variable_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let query = match &variable["query"] {
                serde_json::Value::String(query) => query.clone(),
                object => object["query"].as_str().expect("query.query").to_owned(),
            };
            (variable["name"].as_str().expect("name").to_owned(), query)
        })
        .collect()
}

/// One alerting rule of `alerts.yml`, as far as these checks need.
#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    keys: BTreeMap<String, String>,
}

/// Reads the rules of a Prometheus rules file. An `expr:` is one line or
/// a block scalar (`>-`, `|`) of the lines indented further.
fn rules(yaml: &str) -> Vec<Rule> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut rules: Vec<Rule> = Vec::new();
    let mut idx = 0;
    while idx < lines.len() {
        let line = lines[idx];
        let trimmed = line.trim_start();
        idx += 1;
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push(Rule {
                alert: unquote(name),
                ..Rule::default()
            });
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        if key.contains(' ') {
            continue;
        }
        let value = value.trim();
        if key == "expr" {
            if value.starts_with('>') || value.starts_with('|') {
                let indent = line.len() - trimmed.len();
                let mut block = Vec::new();
                while idx < lines.len() {
                    let next = lines[idx];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    idx += 1;
                }
                rule.expr = block.join(" ");
            } else {
                rule.expr = unquote(value);
            }
        } else {
            rule.keys.insert(key.to_owned(), unquote(value));
        }
    }
    rules
}

/// A YAML scalar without its quotes.
fn unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

/// The series selectors of a promtool test file (`series: '...'`).
fn test_series(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|line| line.trim_start().strip_prefix("- series:"))
        .map(unquote)
        .collect()
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|ch| match ch {
            ' ' => Some('-'),
            ch if ch.is_alphanumeric() || ch == '-' || ch == '_' => Some(ch),
            _ => None,
        })
        .collect()
}

#[test]
fn the_lexer_finds_metric_label_and_function_names() {
    let found = names(
        r#"histogram_quantile(0.99, sum by (le, job) (rate(bridge_ingest_ack_duration_seconds_bucket{job="$job", instance=~"${instance}"}[$__rate_interval])))
           / on (instance) group_left bridge_spool_max_bytes offset 5m > 1e3 unless absent(up{job='x'})"#,
    )
    .unwrap();
    assert_eq!(
        found.metrics,
        [
            (
                "bridge_ingest_ack_duration_seconds_bucket".to_owned(),
                vec!["job".to_owned(), "instance".to_owned()]
            ),
            ("bridge_spool_max_bytes".to_owned(), vec![]),
            ("up".to_owned(), vec!["job".to_owned()]),
        ]
    );
    assert_eq!(found.grouping, ["le", "job", "instance"]);
}

#[test]
fn a_misspelled_name_is_caught() {
    let exposed = exposed();
    let good = r#"sum by (job, status) (rate(bridge_ingest_requests_total{status="200"}[5m]))"#;
    assert_eq!(check_expr(good, &exposed), Vec::<String>::new());
    for (bad, expected) in [
        (
            "rate(bridge_ingest_request_total[5m])",
            "bridge_ingest_request_total is not a metric",
        ),
        // The family's name without the counter's suffix.
        (
            "rate(bridge_ingest_requests[5m])",
            "bridge_ingest_requests is not a metric",
        ),
        (
            "histogram_quantile(0.9, rate(bridge_ingest_ack_duration_seconds[5m]))",
            "bridge_ingest_ack_duration_seconds is not a metric",
        ),
        (
            r#"rate(bridge_ingest_requests_total{stauts="200"}[5m])"#,
            "has no label stauts",
        ),
        (
            "sum by (project) (rate(bridge_ingest_requests_total[5m]))",
            "the label project",
        ),
        (
            "rat(bridge_ingest_requests_total[5m])",
            "unknown function rat()",
        ),
        (r#"{__name__="bridge_ready"}"#, "matchers without a metric"),
    ] {
        let problems = check_expr(bad, &exposed);
        assert!(
            problems.iter().any(|problem| problem.contains(expected)),
            "{bad}: expected {expected:?}, got {problems:?}"
        );
    }
}

#[test]
fn the_dashboard_uses_only_exposed_metrics_and_labels() {
    let exposed = exposed();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/braze-mixpanel-bridge.json"))
            .expect("the dashboard is JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() > 20, "only {} expressions found", exprs.len());
    let mut problems = Vec::new();
    for (at, expr) in &exprs {
        problems.extend(
            check_expr(expr, &exposed)
                .into_iter()
                .map(|problem| format!("{at}: {problem}")),
        );
    }
    let variables = dashboard_variable_queries(&dashboard);
    assert!(!variables.is_empty());
    for (name, query) in &variables {
        // label_values(<selector>, <label>): the label must be the selector's.
        let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
        else {
            problems.push(format!("variable {name}: not label_values(...): {query}"));
            continue;
        };
        let (selector, label) = args
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        problems.extend(
            check_expr(&format!("sum by ({}) ({selector})", label.trim()), &exposed)
                .into_iter()
                .map(|problem| format!("variable {name}: {problem}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_dashboard_is_importable() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/braze-mixpanel-bridge.json")).unwrap();
    assert!(
        dashboard["schemaVersion"]
            .as_u64()
            .is_some_and(|version| version >= 36)
    );
    assert_eq!(dashboard["uid"], "braze-mixpanel-bridge");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance", "project"]);
    // Every panel, those of collapsed rows included, has its own id and
    // reads the chosen data source.
    let mut ids = BTreeSet::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        let id = panel["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().unwrap());
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                target["expr"].as_str().is_some_and(|expr| !expr.is_empty()),
                "{title}"
            );
        }
    }
}

#[test]
fn the_alert_rules_use_only_exposed_metrics_and_link_their_runbook() {
    let exposed = exposed();
    let rules = rules(&read("deploy/prometheus/alerts.yml"));
    assert!(rules.len() >= 10, "only {} rules read", rules.len());
    let operations = read("docs/operations.md");
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();
    let mut problems = Vec::new();
    for rule in &rules {
        let alert = &rule.alert;
        if rule.expr.is_empty() {
            problems.push(format!("{alert}: no expr read"));
        }
        problems.extend(
            check_expr(&rule.expr, &exposed)
                .into_iter()
                .map(|problem| format!("{alert}: {problem}")),
        );
        if !rule.keys.contains_key("for") {
            problems.push(format!("{alert}: no `for:`"));
        }
        if !matches!(
            rule.keys.get("severity").map(String::as_str),
            Some("critical" | "warning")
        ) {
            problems.push(format!("{alert}: severity is not critical or warning"));
        }
        for annotation in ["summary", "description"] {
            if rule.keys.get(annotation).is_none_or(String::is_empty) {
                problems.push(format!("{alert}: no {annotation}"));
            }
        }
        match rule
            .keys
            .get("runbook")
            .and_then(|runbook| runbook.strip_prefix("docs/operations.md#"))
        {
            Some(anchor) if anchors.contains(anchor) => {}
            other => problems.push(format!(
                "{alert}: runbook {other:?} is no section of docs/operations.md"
            )),
        }
        if !operations.contains(&format!("`{alert}`")) {
            problems.push(format!("{alert}: docs/operations.md does not name it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_alert_tests_feed_exposed_series() {
    let exposed = exposed();
    let series = test_series(&read("deploy/prometheus/alerts_test.yml"));
    assert!(series.len() >= 10, "only {} series read", series.len());
    let problems: Vec<String> = series
        .iter()
        .flat_map(|selector| check_expr(selector, &exposed))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_operations_doc_lists_every_metric() {
    let operations = read("docs/operations.md");
    let missing: Vec<String> = exposed()
        .into_keys()
        .map(|sample| {
            // Histograms are listed once, by their family name.
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| sample.strip_suffix(suffix))
                .map_or(sample.clone(), str::to_owned)
        })
        .filter(|name| !operations.contains(&format!("`{name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not list: {missing:?}"
    );
}
