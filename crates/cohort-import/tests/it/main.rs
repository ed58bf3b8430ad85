//! Integration tests of cohort-import.

mod braze;
mod flow;
mod pull;
