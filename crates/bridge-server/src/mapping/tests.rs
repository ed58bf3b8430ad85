//! Unit tests for the mapping rules.
