//! Which folders a listing walks level by level; a store's location as
//! errors show it. (Listing, reading and writing real stores are tested in
//! `tests/it`.)

use std::sync::Arc;

use object_store::path::Path;

use super::{ArchiveStore, needs_delimiter};
use crate::StoreError;
use crate::layout::Prune;

#[test]
fn a_listing_goes_level_by_level_until_it_has_seen_what_prune_looks_for() {
    let types = Prune::new().event_types(Arc::new(|_: &str| true));
    let hours = Prune::new().since(0);
    let both = types.clone().since(0);
    let under_type = Path::parse("a/event_type=users.x").unwrap();
    let under_date = Path::parse("a/event_type=users.x/date=2024-11-28-11").unwrap();
    assert!(
        !needs_delimiter(None, &Prune::new()),
        "nothing to prune: one flat listing"
    );
    assert!(needs_delimiter(None, &types));
    assert!(!needs_delimiter(Some(&under_type), &types));
    assert!(needs_delimiter(Some(&under_type), &hours));
    assert!(needs_delimiter(Some(&under_type), &both));
    assert!(!needs_delimiter(Some(&under_date), &both));
    let ours = Path::parse("archive/date=2024-11-28-11/workspace=_").unwrap();
    assert!(
        !needs_delimiter(Some(&ours), &types),
        "our layout has no type folders"
    );
}

#[test]
fn cloud_locations_give_their_prefix_without_a_request() {
    let s3 = [("aws_region", "eu-west-1")];
    for (location, prefix) in [
        ("s3://bucket", ""),
        ("s3://bucket/", ""),
        ("s3://bucket/a/b/", "a/b"),
        ("s3a://bucket/a", "a"),
        ("https://s3.eu-west-1.amazonaws.com/bucket/a", "a"),
    ] {
        let store = ArchiveStore::open_with_options(location, &s3).unwrap();
        assert_eq!(store.prefix(), prefix, "{location}");
    }
    let store = ArchiveStore::open_with_options(
        "gs://bucket/currents",
        &[("google_skip_signature", "true")],
    )
    .unwrap();
    assert_eq!(store.prefix(), "currents");
    let azure = [
        ("azure_storage_account_name", "acct"),
        ("azure_storage_account_key", "a2V5"),
    ];
    for location in [
        "az://container/currents",
        "azure://container/currents",
        "abfss://container@acct.dfs.core.windows.net/currents",
        "https://acct.blob.core.windows.net/container/currents",
    ] {
        let store = ArchiveStore::open_with_options(location, &azure).unwrap();
        assert_eq!(store.prefix(), "currents", "{location}");
    }
    let error = ArchiveStore::open("memory:///x").unwrap_err();
    assert!(
        error.to_string().contains("not a supported store"),
        "{error}"
    );
}

#[test]
fn locations_are_checked_and_shown_without_secrets() {
    let missing = ArchiveStore::open("/definitely/not/here").unwrap_err();
    assert!(
        matches!(missing, StoreError::InvalidLocation { .. }),
        "{missing:?}"
    );
    assert!(
        missing.to_string().contains("create the directory first"),
        "{missing}"
    );

    let error = ArchiveStore::open("ftp://user:pw@host/x?token=secret").unwrap_err();
    let message = error.to_string();
    assert!(
        !message.contains("secret") && !message.contains("pw"),
        "{message}"
    );

    let error = ArchiveStore::open_with_options("s3://bucket/prefix", &[("no_such_setting", "1")])
        .unwrap_err();
    assert!(error.to_string().contains("no_such_setting"), "{error}");

    let dir = std::env::temp_dir();
    let error =
        ArchiveStore::open_with_options(dir.to_str().unwrap(), &[("aws_region", "x")]).unwrap_err();
    assert!(matches!(error, StoreError::InvalidLocation { .. }));

    let store = ArchiveStore::open_with_options(
        "s3://bucket/some/prefix",
        &[
            ("aws_region", "eu-west-1"),
            ("aws_access_key_id", "AKIA"),
            ("aws_secret_access_key", "s3cret"),
        ],
    )
    .unwrap();
    assert_eq!(store.prefix(), "some/prefix");
    assert_eq!(store.location(), "s3://bucket/some/prefix");
    let debug = format!("{store:?}");
    assert!(
        !debug.contains("s3cret") && debug.contains("s3://bucket/some/prefix"),
        "{debug}"
    );
}
