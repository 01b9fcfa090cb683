//! The root-key backend matrix: one lifecycle scenario, run against the file keystore,
//! an OpenBao transit server and a SoftHSM2 token through the real daemon; plus the faults of
//! a remote backend (down, paused) and the start-up refusals of bad settings.
#![cfg(feature = "external-suites")]

mod failures;
mod lifecycle_scenario;
mod rotation_and_transit_api;

use crate::backend_support;
use crate::common;
use lifecycle_scenario::lifecycle;
use rotation_and_transit_api::{imported_rotation, transit_api};

use std::time::{Duration, Instant};

use backend_support::{serve_fails, Fixture, Kind, BACKEND_TIMEOUT};
use common::{allow_databases, assert_api_error, Daemon};
use uuid::Uuid;

/// Runs `$scenario(Kind)` once per backend, as `<scenario>_<backend>` tests.
macro_rules! backend_matrix {
    ($scenario:ident: $($test:ident => $kind:expr),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $scenario($kind).await;
            }
        )+
    };
}

backend_matrix!(lifecycle:
    lifecycle_file => Kind::File,
    lifecycle_transit => Kind::Transit,
    lifecycle_pkcs11 => Kind::Pkcs11,
);

backend_matrix!(transit_api:
    transit_api_file => Kind::File,
    transit_api_transit => Kind::Transit,
    transit_api_pkcs11 => Kind::Pkcs11,
);

backend_matrix!(imported_rotation:
    imported_rotation_file => Kind::File,
    imported_rotation_transit => Kind::Transit,
    imported_rotation_pkcs11 => Kind::Pkcs11,
);

fn id(info: &envault::api::KeyInfo) -> Uuid {
    Uuid::parse_str(&info.id).expect("key id is a UUID")
}

async fn read(daemon: &Daemon, db: &str, record: &str) -> Vec<u8> {
    daemon
        .client()
        .get_record(db, record)
        .await
        .unwrap_or_else(|e| panic!("read {db}/{record}: {e:?}"))
}
