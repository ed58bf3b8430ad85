//! Integration tests of the client against wiremock stand-ins for Mixpanel.

#[path = "../common/updates.rs"]
mod updates;

mod engage;
mod import;
mod query;
