//! The key and database lifecycle through the real daemon (DESIGN.md rules 1–8): service
//! authorizations, registrations, rotation, disable / enable, soft deletion with restore and
//! purge, key deletion, dry-run previews and the activity log.

mod authorizations;
mod disable_and_soft_deletion;
mod dry_runs_and_activity_log;
mod key_deletion;
mod registrations_and_rotation;

use crate::common;
use crate::common::Rng;
use crate::lifecycle_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_api_error, unique, Daemon};
use envault::api::KeyInfo;
use envault::client::{Client, Method};
use lifecycle_support::{
    assert_absent_under, assert_audit_chain_ok, assert_json_error, audit_file_events,
    authorizations, call, delete_database, delete_key, disable_key, enable_key, encodings, events,
    expect_status, grant, key_path, poll, raw_code, restore_database, revoke, rotate, usable_key,
    KeepAlive, Needle,
};
use serde_json::{json, Value};

const DUPLICATE_MESSAGE: &str =
    "an access policy with identical attributes and roles already exists";

/// Writes `count` records `r0..` with distinct values into `db`; returns them.
async fn fill(client: &Client, db: &str, count: usize) -> BTreeMap<String, Vec<u8>> {
    let mut records = BTreeMap::new();
    for i in 0..count {
        let key = format!("r{i}");
        let value = format!("{db}/{key}/{}", unique("v")).into_bytes();
        client.put_record(db, &key, &value).await.unwrap();
        records.insert(key, value);
    }
    records
}

/// Every record of `db` reads back exactly.
async fn assert_records(client: &Client, db: &str, records: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in records {
        let got = client
            .get_record(db, key)
            .await
            .unwrap_or_else(|e| panic!("read {db}/{key}: {e}"));
        assert_eq!(&got, value, "{db}/{key}");
    }
}

/// The registrations of a key, by database name: (state, role, crn, id).
async fn registrations(
    client: &Client,
    key: &str,
) -> BTreeMap<String, (String, String, String, String)> {
    let info = client.get_key(key).await.unwrap();
    info.registrations
        .unwrap_or_else(|| panic!("GET /v1/keys/{key} has no registrations field"))
        .into_iter()
        .map(|r| {
            assert_eq!(r.kind, "database");
            (r.name, (r.state, r.role, r.crn, r.id))
        })
        .collect()
}

async fn key_version(client: &Client, key: &str) -> u32 {
    client.get_key(key).await.unwrap().version
}
