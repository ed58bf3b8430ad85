//! Unit tests for the event parser.
