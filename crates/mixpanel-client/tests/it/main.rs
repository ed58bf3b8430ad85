//! Integration tests of the client against wiremock stand-ins for Mixpanel.

mod engage;
mod import;
mod query;
