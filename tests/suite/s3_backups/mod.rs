//! Backups to an S3 bucket, against a real SeaweedFS S3 gateway (`tests/s3_support`)
//! and the real daemon: every backup verb on the bucket, metadata, retention, the server killed
//! during an upload, a bucket that denies writes, an altered object, shredding the backup key,
//! and listing the bucket after the node's data dir was restored from an older copy.
#![cfg(feature = "external-suites")]

mod create_and_schedule;
mod failures;
mod recovery_and_credentials;

use crate::backup_support;
use crate::common;
use crate::common::{wait_for, Rng};
use crate::s3_support;

use std::collections::BTreeMap;
use std::time::Duration;

use backup_support::{
    assert_json_error, assert_no_database, assert_same_records, audit_events, backup_key,
    create_backup, create_backup_raw, database_count, delete_backup_raw, dump, expect,
    get_backup_raw, id_of, list_backups, records_key, restore, restore_raw, rotate, shred,
};
use common::{unique, Daemon};
use envault::client::Client;
use s3_support::{Weed, ADMIN_KEY, ADMIN_SECRET, BUCKET, LIMITED_KEY, LIMITED_SECRET};
use serde_json::Value;

async fn daemon_on(
    weed: &Weed,
    prefix: &str,
    key: &str,
    secret: &str,
    extra: &[(&str, &str)],
) -> Daemon {
    let mut env = weed.daemon_env(prefix, key, secret);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start_with_env(&env).await
}

/// `count` records of about `size` bytes each.
fn records(seed: u64, count: usize, size: usize) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let len = size / 2 + rng.below(size as u64) as usize;
            (format!("rec/{i:05}"), rng.bytes(len))
        })
        .collect()
}

/// Keys A (records) and B (backup), and a database under them holding `records`.
async fn database_with(client: &Client, records: &BTreeMap<String, Vec<u8>>) -> (String, String) {
    let a = records_key(client, &unique("key-a")).await;
    let (b, _) = backup_key(client, &unique("key-b")).await;
    let db = client
        .create_database(&unique("db"), Some(&a.name), Some(&b.name))
        .await
        .expect("create database");
    for (key, value) in records {
        client.put_record(&db.name, key, value).await.expect("put");
    }
    (db.name, b.name)
}

fn object_key(prefix: &str, id: &str) -> String {
    format!("{prefix}/{id}.evb")
}

fn meta(attributes: &object_store::Attributes, key: &'static str) -> Option<String> {
    attributes
        .get(&object_store::Attribute::Metadata(key.into()))
        .map(|v| v.to_string())
}
