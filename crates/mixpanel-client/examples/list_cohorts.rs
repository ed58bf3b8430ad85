//! Lists a project's saved cohorts, or the members of one (Query API).
//!
//! Run with: `cargo run -p mixpanel-client --example list_cohorts [-- COHORT_ID]`
//!
//! Reads `MIXPANEL_SERVICE_ACCOUNT_USERNAME`, `MIXPANEL_SERVICE_ACCOUNT_SECRET`
//! and `MIXPANEL_PROJECT_ID`, and optionally `MIXPANEL_REGION` (`us`, `eu`
//! or `in`) and `MIXPANEL_API_URL` (a base URL that replaces Mixpanel's
//! hosts). Each page of members is one of the project's 60 queries per hour.

use std::error::Error;
use std::pin::pin;

use futures_util::TryStreamExt as _;
use mixpanel_client::{Client, Credentials, MemberQuery, Region};

fn env(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name).map_err(|_| format!("set {name}").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let cohort_id: Option<u64> = match std::env::args().nth(1) {
        Some(arg) => Some(
            arg.parse()
                .map_err(|_| format!("COHORT_ID must be a number, got {arg:?}"))?,
        ),
        None => None,
    };
    let credentials = Credentials::service_account(
        env("MIXPANEL_SERVICE_ACCOUNT_USERNAME")?,
        env("MIXPANEL_SERVICE_ACCOUNT_SECRET")?,
        env("MIXPANEL_PROJECT_ID")?,
    );
    let mut builder = Client::builder(credentials);
    if let Ok(region) = std::env::var("MIXPANEL_REGION") {
        builder = builder.region(region.parse::<Region>()?);
    }
    if let Ok(base_url) = std::env::var("MIXPANEL_API_URL") {
        builder = builder.base_url(base_url);
    }
    let client = builder.build()?;

    let Some(cohort_id) = cohort_id else {
        for cohort in client.list_cohorts().await? {
            let count = cohort
                .count
                .map_or_else(|| "?".to_owned(), |count| count.to_string());
            #[allow(clippy::print_stdout)]
            {
                println!("{}\t{count}\t{}", cohort.id, cohort.name);
            }
        }
        return Ok(());
    };
    let query = MemberQuery::new().output_properties(["$email"]);
    let mut members = pin!(client.cohort_members(cohort_id, query));
    while let Some(member) = members.try_next().await? {
        let email = member
            .properties
            .get("$email")
            .and_then(|email| email.as_str())
            .unwrap_or("");
        #[allow(clippy::print_stdout)]
        {
            println!("{}\t{email}", member.distinct_id);
        }
    }
    Ok(())
}
