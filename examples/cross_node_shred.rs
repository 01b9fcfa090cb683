//! Cross-node time-to-effect of a shred: node A shreds a key that node B is serving,
//! and B is asked again the moment A's call has returned.
//!
//! ```text
//! cross_node_shred <socket A> <token A> <socket B> <token B> [trials]
//! ```
//!
//! Per trial: on A, a generated key, a database under it and one record; B reads the record
//! (so B holds the DEK in its cache); A force-deletes the key; as soon as A's answer is in,
//! B is asked for the record again. Reported: the time from A's answer to B's refusal (p50,
//! p99, max over the trials), and how many of B's post-shred reads were served: the design
//! promises 0 (every request that starts after the call returned is refused). Both nodes
//! must share one PostgreSQL store and one root-key backend (scripts/bench-multi-node.sh).

use std::time::{Duration, Instant};

use envault::client::Client;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: cross_node_shred <socket A> <token A> <socket B> <token B> [trials]");
        std::process::exit(2);
    }
    let a = Client::new(&args[1], Some(args[2].clone()));
    let b = Client::new(&args[3], Some(args[4].clone()));
    let trials: usize = args.get(5).and_then(|t| t.parse().ok()).unwrap_or(100);
    let run = format!("{:08x}", rand::random::<u32>());
    let grant = serde_json::json!({"source": "databases", "target": "*", "roles": ["Reader"]});
    // A duplicate grant (409) from an earlier run is fine.
    let _ = a
        .request(
            envault::client::Method::POST,
            "/v1/authorizations",
            Some(grant.to_string().as_bytes()),
        )
        .await;

    let mut effect = Vec::with_capacity(trials);
    let mut served_after_shred = 0usize;
    for trial in 0..trials {
        let key = format!("shred-{run}-{trial}");
        let db = format!("shreddb-{run}-{trial}");
        a.create_key(&key, None, None)
            .await
            .expect("create key on A");
        a.create_database(&db, Some(&key), None)
            .await
            .expect("create database on A");
        a.put_record(&db, "r", b"value").await.expect("put on A");
        b.get_record(&db, "r")
            .await
            .expect("read on B before the shred");

        a.delete_key(&key, true).await.expect("shred on A");
        let returned = Instant::now();
        match b.get_record(&db, "r").await {
            Ok(_) => served_after_shred += 1,
            Err(err) => {
                let text = format!("{err:?}");
                assert!(text.contains("key_destroyed"), "unexpected refusal: {text}");
            }
        }
        effect.push(returned.elapsed());
    }
    effect.sort_unstable();
    let pick =
        |q: f64| effect[((effect.len() as f64 * q).ceil() as usize).clamp(1, effect.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{{\"trials\": {trials}, \"served_after_shred\": {served_after_shred}, \
         \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(pick(1.0))
    );
    if served_after_shred > 0 {
        std::process::exit(1);
    }
}
