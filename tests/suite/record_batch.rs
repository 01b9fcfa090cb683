//! `POST /v1/databases/{db}/records:batch` on the real daemon: per-operation results in order,
//! durability of an acknowledged batch across `kill -9`, bad input refused as a whole with
//! nothing changed, access control and a shredded key, and the bound on an answer's size.

use crate::common;

use common::{allow_databases, assert_api_error, assert_error_answer, unique, Daemon};
use envault::api::{RecordBatchOp, RecordBatchResult};
use envault::client::{Client, Method};
use serde_json::{json, Value};

fn get(key: &str) -> RecordBatchOp {
    RecordBatchOp::Get { key: key.into() }
}

fn delete(key: &str) -> RecordBatchOp {
    RecordBatchOp::Delete { key: key.into() }
}

#[track_caller]
fn assert_failed(result: &RecordBatchResult, status: u16, code: &str) {
    assert_eq!(result.status, status, "{result:?}");
    let error = result
        .error
        .as_ref()
        .expect("a failed operation has an error");
    assert_eq!(error.code, code, "{result:?}");
    assert!(!error.message.is_empty());
    assert_eq!(result.value, None);
}

/// Every record key of a database.
async fn record_keys(client: &Client, db: &str) -> Vec<String> {
    client
        .list_records(db, &Default::default())
        .await
        .unwrap()
        .keys
}

/// Posts a raw JSON batch; returns the status and the body.
async fn post_batch(client: &Client, db: &str, body: &Value) -> (u16, Vec<u8>) {
    let (status, answer) = client
        .request(
            Method::POST,
            &format!("/v1/databases/{db}/records:batch"),
            Some(body.to_string().as_bytes()),
        )
        .await
        .unwrap();
    (status, answer.to_vec())
}

#[tokio::test]
async fn batch_runs_in_order_with_one_result_per_operation() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let db = unique("batch");
    client.create_database(&db, None, None).await.unwrap();
    client.put_record(&db, "old", b"before").await.unwrap();

    let results = client
        .record_batch(
            &db,
            vec![
                RecordBatchOp::put("a", b"one"),
                RecordBatchOp::put("a", b"two"), // same key again: the later put wins
                get("a"),
                get("old"),
                get("missing"),
                delete("old"),
                delete("old"),
                RecordBatchOp::put("b", &[0u8, 255, 7]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 8);
    assert_eq!((results[0].status, results[1].status), (204, 204));
    assert_eq!(results[0].value, None);
    assert_eq!(results[2].status, 200);
    assert_eq!(results[2].value_bytes().as_deref(), Some(&b"two"[..]));
    assert_eq!(results[3].value_bytes().as_deref(), Some(&b"before"[..]));
    assert_failed(&results[4], 404, "not_found");
    assert_eq!(results[5].status, 204);
    assert_failed(&results[6], 404, "not_found");
    assert_eq!(results[7].status, 204);

    // The single-record routes see exactly what the batch did.
    assert_eq!(client.get_record(&db, "a").await.unwrap(), b"two");
    assert_eq!(client.get_record(&db, "b").await.unwrap(), [0u8, 255, 7]);
    assert_api_error(client.get_record(&db, "old").await, 404, "not_found");
    assert_eq!(record_keys(&client, &db).await, ["a", "b"]);

    // The wire shape with curl-style JSON: statuses, base64 values, error objects.
    let (status, body) = post_batch(
        &client,
        &db,
        &json!({"ops": [{"op": "get", "key": "a"}, {"op": "get", "key": "nope"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer["results"][0],
        json!({"status": 200, "value": "dHdv"})
    );
    assert_eq!(answer["results"][1]["status"], 404);
    assert_eq!(answer["results"][1]["error"]["code"], "not_found");
}

#[tokio::test]
async fn an_acknowledged_batch_survives_kill_9() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client();
    let db = unique("durable");
    client.create_database(&db, None, None).await.unwrap();
    let value = vec![0x5au8; 4096]; // a 4 KiB value, larger than most records
    let ops = (0..200)
        .map(|i| RecordBatchOp::put(format!("k{i:03}"), &value))
        .collect();
    let results = client.record_batch(&db, ops).await.unwrap();
    assert!(results.iter().all(|r| r.status == 204), "{results:?}");

    daemon.kill9().await;
    daemon.restart().await;
    let client = daemon.client();
    let reads = (0..200).map(|i| get(&format!("k{i:03}"))).collect();
    let results = client.record_batch(&db, reads).await.unwrap();
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.status, 200, "k{i:03}: {result:?}");
        assert_eq!(result.value_bytes().as_deref(), Some(&value[..]), "k{i:03}");
    }
}

#[tokio::test]
async fn bad_input_refuses_the_whole_batch_and_changes_nothing() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_MAX_RECORD_SIZE", "1KiB")]).await;
    let client = daemon.client();
    let db = unique("strict");
    client.create_database(&db, None, None).await.unwrap();
    client.put_record(&db, "kept", b"original").await.unwrap();
    let put = |key: &str, value: &str| json!({"op": "put", "key": key, "value": value});
    let delete_kept = json!({"op": "delete", "key": "kept"});

    // Each batch starts with a valid put and a valid delete, then one bad operation.
    let long_key = "k".repeat(5000);
    let cases: Vec<(Value, u16, &str)> = vec![
        (put("x", "!!not base64"), 400, "bad_request"),
        (put(&long_key, "AA=="), 400, "bad_request"),
        (put("tab\there", "AA=="), 400, "bad_request"),
        (put("", "AA=="), 400, "bad_request"),
        (json!({"op": "frob", "key": "x"}), 400, "bad_request"),
        (json!({"op": "get"}), 400, "bad_request"),
        (json!({"op": "put", "key": "x"}), 400, "bad_request"),
        (put("big", &"A".repeat(1368)), 413, "too_large"), // 1,026 bytes > 1 KiB
    ];
    for (bad, status, code) in cases {
        let body = json!({"ops": [put("new", "AAAA"), delete_kept.clone(), bad]});
        let answer = post_batch(&client, &db, &body).await;
        assert_error_answer(&answer, status, code);
    }
    for body in [
        json!({"ops": []}),
        json!({"ops": "put"}),
        json!({"ops": [put("new", "AAAA")], "extra": 1}),
        json!([put("new", "AAAA")]),
    ] {
        let answer = post_batch(&client, &db, &body).await;
        assert_error_answer(&answer, 400, "bad_request");
    }
    let too_many: Vec<Value> = (0..1001).map(|i| put(&format!("n{i}"), "AA==")).collect();
    let answer = post_batch(&client, &db, &json!({ "ops": too_many })).await;
    assert_error_answer(&answer, 400, "bad_request");
    let (status, body) = client
        .request(
            Method::POST,
            &format!("/v1/databases/{db}/records:batch"),
            Some(b"{not json"),
        )
        .await
        .unwrap();
    assert_error_answer(&(status, body.to_vec()), 400, "bad_request");

    assert_eq!(record_keys(&client, &db).await, ["kept"]);
    assert_eq!(client.get_record(&db, "kept").await.unwrap(), b"original");
}

#[tokio::test]
async fn an_answer_holds_at_most_max_record_size_of_values() {
    let daemon = Daemon::start_with_env(&[("ENVAULT_MAX_RECORD_SIZE", "4KiB")]).await;
    let client = daemon.client();
    let db = unique("budget");
    client.create_database(&db, None, None).await.unwrap();
    let value = vec![7u8; 3000];
    let puts = (0..3)
        .map(|i| RecordBatchOp::put(format!("r{i}"), &value))
        .collect();
    assert!(client
        .record_batch(&db, puts)
        .await
        .unwrap()
        .iter()
        .all(|r| r.status == 204));

    let results = client
        .record_batch(&db, vec![get("r0"), get("r1"), delete("r2"), get("r2")])
        .await
        .unwrap();
    assert_eq!(results[0].value_bytes().as_deref(), Some(&value[..]));
    assert_failed(&results[1], 413, "too_large");
    assert_eq!(
        results[2].status, 204,
        "writes are not limited by the read budget"
    );
    assert_failed(&results[3], 404, "not_found");
    // Read on its own, the refused record is there.
    assert_eq!(client.get_record(&db, "r1").await.unwrap(), value);
}

#[tokio::test]
async fn batches_obey_tokens_and_die_with_their_key() {
    let daemon = Daemon::start().await;
    let client = daemon.client();
    let key = client
        .create_key(&unique("root"), None, None)
        .await
        .unwrap();
    allow_databases(&client, &key.name).await;
    let (mine, other) = (unique("mine"), unique("other"));
    client
        .create_database(&mine, Some(&key.name), None)
        .await
        .unwrap();
    client.create_database(&other, None, None).await.unwrap();
    client.put_record(&other, "secret", b"s").await.unwrap();

    let token = client
        .create_token("app", std::slice::from_ref(&mine))
        .await
        .unwrap();
    let app = daemon.client_with_token(token["token"].as_str());
    let results = app
        .record_batch(&mine, vec![RecordBatchOp::put("x", b"1"), get("x")])
        .await
        .unwrap();
    assert_eq!(results[1].value_bytes().as_deref(), Some(&b"1"[..]));
    assert_api_error(
        app.record_batch(&other, vec![get("secret"), delete("secret")])
            .await,
        403,
        "forbidden",
    );
    assert_eq!(client.get_record(&other, "secret").await.unwrap(), b"s");
    let (status, body) = client
        .request(
            Method::GET,
            "/v1/audit?action=databases.records.batch",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let events: Value = serde_json::from_slice(&body).unwrap();
    let denied = events["events"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "one denial, no successes: {events}");
    assert_eq!(denied[0]["outcome"], "denied", "{events}");
    assert_api_error(
        daemon
            .client_with_token(None)
            .record_batch(&mine, vec![get("x")])
            .await,
        401,
        "unauthenticated",
    );

    // Forced delete of the root key: the whole batch is refused, nothing is read or written.
    let (status, body) = client
        .request(
            Method::DELETE,
            &format!("/v1/keys/{}?force=true", key.name),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_api_error(
        client
            .record_batch(&mine, vec![get("x"), RecordBatchOp::put("y", b"2")])
            .await,
        423,
        "key_destroyed",
    );
}
