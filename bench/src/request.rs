//! One request of a worker's closed loop, on an envault connection or a transit one.

use envault::api::RecordBatchOp;
use envault::client::{Client, ClientError};
use rand::rngs::StdRng;
use rand::RngExt as _;

use crate::args::BenchOp;
use crate::run::{record_key, Plan, Worker};

/// One request (a batch when `--batch` > 1); the error is the message the report counts.
pub(crate) async fn one_request(
    worker: &mut Worker,
    plan: &Plan,
    rng: &mut StdRng,
    value: &[u8],
) -> Result<(), String> {
    let fail = |what: &str, e: ClientError| format!("{what}: {e}");
    match worker {
        Worker::Envault(client) if plan.batch > 1 => batch_request(client, plan, rng, value).await,
        Worker::Envault(client) => match plan.op {
            BenchOp::Put => {
                let (database, rec) = plan.pick(rng);
                client
                    .put_record(database, &rec, value)
                    .await
                    .map_err(|e| fail("put", e))
            }
            BenchOp::Get => {
                let (database, rec) = plan.pick(rng);
                let got = client
                    .get_record(database, &rec)
                    .await
                    .map_err(|e| fail("get", e))?;
                check_len(got.len(), plan.value_size)
            }
            BenchOp::Mixed => {
                let (database, rec) = plan.pick(rng);
                if rng.random_range(0..10u32) < 7 {
                    let got = client
                        .get_record(database, &rec)
                        .await
                        .map_err(|e| fail("get", e))?;
                    check_len(got.len(), plan.value_size)
                } else {
                    client
                        .put_record(database, &rec, value)
                        .await
                        .map_err(|e| fail("put", e))
                }
            }
            BenchOp::Wrap => client
                .wrap(&plan.key, Some(value), &[])
                .await
                .map(drop)
                .map_err(|e| fail("wrap", e)),
            BenchOp::Unwrap => {
                let plain = client
                    .unwrap(&plan.key, &plan.ciphertext, &[])
                    .await
                    .map_err(|e| fail("unwrap", e))?;
                check_len(plain.len(), plan.value_size)
            }
            BenchOp::TransitEncrypt | BenchOp::TransitDecrypt => {
                Err("transit operation on an envault connection".into())
            }
        },
        Worker::Transit(connection) => match plan.op {
            BenchOp::TransitEncrypt => connection.encrypt(value).await.map(drop),
            BenchOp::TransitDecrypt => {
                let plain = connection.decrypt(&plan.ciphertext).await?;
                check_len(plain.len(), plan.value_size)
            }
            _ => Err("envault operation on a transit connection".into()),
        },
    }
}

/// One batch of `plan.batch` operations on one database; every operation must succeed.
async fn batch_request(
    client: &Client,
    plan: &Plan,
    rng: &mut StdRng,
    value: &[u8],
) -> Result<(), String> {
    let database = &plan.databases[rng.random_range(0..plan.databases.len())];
    let ops: Vec<RecordBatchOp> = (0..plan.batch)
        .map(|_| {
            let key = record_key(rng.random_range(0..plan.keys));
            let read = match plan.op {
                BenchOp::Get => true,
                BenchOp::Mixed => rng.random_range(0..10u32) < 7,
                _ => false,
            };
            if read {
                RecordBatchOp::Get { key }
            } else {
                RecordBatchOp::put(key, value)
            }
        })
        .collect();
    let results = client
        .record_batch(database, ops)
        .await
        .map_err(|e| format!("batch: {e}"))?;
    if results.len() != plan.batch {
        return Err(format!(
            "batch answered {} results for {} operations",
            results.len(),
            plan.batch
        ));
    }
    for result in results {
        match (result.status, &result.error) {
            (204, None) => {}
            (200, None) => {
                let got = result.value_bytes().ok_or("get without a value")?;
                check_len(got.len(), plan.value_size)?;
            }
            (status, error) => {
                return Err(format!("batch operation failed: {status} {error:?}"));
            }
        }
    }
    Ok(())
}

fn check_len(got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("answer has {got} bytes, expected {want}"))
    }
}
