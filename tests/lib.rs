//! Shared helpers for the workspace end-to-end tests live in `e2e/`.
