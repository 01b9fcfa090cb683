//! Acknowledged writes survive SIGKILL under load: workers, a database creator, and the check of the whole world after each kill.

use super::*;

/// Names the daemon acknowledged creating, and names whose creation got no answer.
#[derive(Debug, Default)]
struct Names {
    acked: BTreeSet<String>,
    pending: BTreeSet<String>,
}

impl Names {
    /// Checks `listed` against the model (acked ⊆ listed ⊆ acked ∪ pending) and resolves the
    /// pending names by what is listed.
    fn reconcile(&mut self, what: &str, listed: &BTreeSet<String>, violations: &mut Vec<String>) {
        for name in self.acked.difference(listed) {
            violations.push(format!(
                "{what} {name:?} was acknowledged (201) but is not listed"
            ));
        }
        for name in listed {
            if !self.acked.contains(name) && !self.pending.contains(name) {
                violations.push(format!("{what} {name:?} is listed but was never created"));
            }
        }
        for name in std::mem::take(&mut self.pending) {
            if listed.contains(&name) {
                self.acked.insert(name);
            }
        }
    }
}

/// Record models of one worker: (database, record key) → model.
type Records = BTreeMap<(String, String), RecordModel>;

#[derive(Debug, Default)]
struct WorkerReport {
    acked: u64,
    unknown: u64,
    violations: Vec<String>,
}

/// A value tagged with its origin (for failure messages), of a random size.
fn make_value(worker: u64, round: usize, n: u64, rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=69 => rng.below(256),
        70..=94 => rng.range(256, 4096),
        _ => rng.range(16 * 1024, 64 * 1024),
    } as usize;
    let mut value = format!("w{worker}.r{round}.n{n}|").into_bytes();
    value.extend(rng.bytes(len));
    value
}

/// One connection's load: PUTs and DELETEs on its own keys until `stop` or the first request
/// without an answer (the daemon was killed).
async fn worker(
    id: u64,
    round: usize,
    client: Client,
    mut model: Records,
    dbs: Vec<String>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> (Records, WorkerReport) {
    let mut report = WorkerReport::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let db = dbs[rng.below(dbs.len() as u64) as usize].clone();
        let key = format!("w{id}/k{:02}", rng.below(KEYS_PER_WORKER));
        let entry = model.entry((db.clone(), key.clone())).or_default();
        if rng.percent(22) {
            let result = bounded("DELETE record", client.delete_record(&db, &key)).await;
            match outcome(result) {
                Outcome::Acked(()) => {
                    if entry.certain() && entry.acked.is_none() {
                        report.violations.push(format!(
                            "DELETE {db}/{key} answered 204 but the record was absent"
                        ));
                    }
                    entry.ack(None);
                    report.acked += 1;
                }
                Outcome::Refused(404, code, _) if code == "not_found" => {
                    if !entry.allows(&None) {
                        report.violations.push(format!(
                            "DELETE {db}/{key} answered 404 but the acknowledged state is {} \
                             (an acknowledged write was lost)",
                            describe(&entry.acked)
                        ));
                    }
                    entry.ack(None);
                    report.acked += 1;
                }
                Outcome::Refused(status, code, message) => report.violations.push(format!(
                    "DELETE {db}/{key} refused: {status} {code}: {message}"
                )),
                Outcome::Unknown(_) => {
                    entry.unknown(None);
                    report.unknown += 1;
                    break;
                }
            }
        } else {
            let value = make_value(id, round, n, &mut rng);
            let result = bounded("PUT record", client.put_record(&db, &key, &value)).await;
            match outcome(result) {
                Outcome::Acked(()) => {
                    entry.ack(Some(value));
                    report.acked += 1;
                }
                Outcome::Refused(status, code, message) => report.violations.push(format!(
                    "PUT {db}/{key} refused: {status} {code}: {message}"
                )),
                Outcome::Unknown(_) => {
                    entry.unknown(Some(value));
                    report.unknown += 1;
                    break;
                }
            }
        }
    }
    (model, report)
}

/// What the creator task tried: (is a key, name, outcome).
type Creation = Option<(bool, String, Outcome<()>)>;

/// Now and then creates a key or a database (under `key`, or provider-managed), at a random
/// moment of the round, so that some creations are cut by the kill.
async fn creator(
    client: Client,
    round: usize,
    mut rng: Rng,
    key: String,
    may_create_db: bool,
    stop: Arc<AtomicBool>,
) -> Creation {
    tokio::time::sleep(ms(rng.range(0, 250))).await;
    if stop.load(Ordering::SeqCst) || rng.percent(30) {
        return None;
    }
    if may_create_db && rng.percent(40) {
        let name = format!("load-db-r{round}");
        let under = rng.percent(50).then_some(key.as_str());
        let result = bounded(
            "create database",
            client.create_database(&name, under, None),
        )
        .await;
        Some((false, name, outcome(result.map(drop))))
    } else {
        let name = format!("load-key-r{round}");
        let result = bounded("create key", client.create_key(&name, None, None)).await;
        Some((true, name, outcome(result.map(drop))))
    }
}

/// After a restart: keys, databases, every modelled record, the listings and the activity log.
async fn verify_world(
    daemon: &Daemon,
    keys: &mut Names,
    dbs: &mut Names,
    records: &mut [Records],
    context: &str,
) -> Vec<String> {
    let client = daemon.client();
    let mut violations = Vec::new();
    keys.reconcile("key", &key_names(&client).await, &mut violations);
    let states = database_states(&client).await;
    let listed: BTreeSet<String> = states.keys().cloned().collect();
    dbs.reconcile("database", &listed, &mut violations);
    for (name, state) in &states {
        if state != "active" {
            violations.push(format!("database {name:?} is {state}, not active"));
        }
    }
    // Every record a worker touched, one connection per worker.
    let mut checks = Vec::new();
    for (w, model) in records.iter_mut().enumerate() {
        let model = std::mem::take(model);
        let client = daemon.client();
        checks.push(tokio::spawn(async move {
            let mut model = model;
            let mut violations = Vec::new();
            for ((db, key), entry) in model.iter_mut() {
                match read_state(&client, db, key).await {
                    Ok(state) => {
                        if !entry.allows(&state) {
                            let maybe: Vec<String> = entry.maybe.iter().map(describe).collect();
                            violations.push(format!(
                                "{db}/{key} (worker {w}) reads {} but the last acknowledged \
                                 state is {} (unanswered: {maybe:?})",
                                describe(&state),
                                describe(&entry.acked),
                            ));
                        }
                        entry.observed(state);
                    }
                    Err(e) => violations.push(format!("GET {db}/{key}: {e}")),
                }
            }
            (model, violations)
        }));
    }
    for (w, check) in checks.into_iter().enumerate() {
        let (model, found) = check.await.expect("record check task");
        records[w] = model;
        violations.extend(found);
    }
    // The listings hold exactly the present records (nothing resurrected, nothing extra).
    for db in dbs.acked.clone() {
        let expected: BTreeSet<String> = records
            .iter()
            .flat_map(|m| m.iter())
            .filter(|((d, _), e)| d == &db && e.acked.is_some())
            .map(|((_, k), _)| k.clone())
            .collect();
        let listed = record_keys(&client, &db).await;
        if listed != expected {
            let extra: Vec<&String> = listed.difference(&expected).collect();
            let missing: Vec<&String> = expected.difference(&listed).collect();
            violations.push(format!(
                "records of {db}: listing differs from the reads: extra {extra:?}, missing {missing:?}"
            ));
        }
    }
    let report = expect_json(&client, Method::GET, "/v1/audit/verify", None, 200).await;
    if report["ok"] != true {
        violations.push(format!("{context}: activity log broken: {report}"));
    }
    violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_under_load() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "crash_consistency",
        "acknowledged_writes_survive_sigkill_under_load",
        seed,
    );
    let mut rng = Rng::new(seed).fork(1);
    let started = Instant::now();
    let mut daemon = Daemon::start().await;
    let admin = daemon.client();
    let (key, _) = customer_key(&admin, "load-key").await;
    let mut keys = Names::default();
    keys.acked.insert(key.clone());
    let mut dbs = Names::default();
    database(&admin, "load-db-a", Some(&key)).await;
    database(&admin, "load-db-b", None).await;
    dbs.acked
        .extend(["load-db-a".to_string(), "load-db-b".to_string()]);
    let mut records: Vec<Records> = (0..WORKERS).map(|_| Records::new()).collect();
    let (mut acked, mut unknown, mut load_ms) = (0u64, 0u64, 0u64);
    let kills = kills();
    for round in 0..kills {
        let context = format!("seed {seed}, kill {}/{kills}", round + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let db_list: Vec<String> = dbs.acked.iter().cloned().collect();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            workers.push(tokio::spawn(worker(
                w,
                round,
                daemon.client(),
                std::mem::take(&mut records[w as usize]),
                db_list.clone(),
                rng.fork(round as u64 * 100 + w),
                Arc::clone(&stop),
            )));
        }
        let created = tokio::spawn(creator(
            daemon.client(),
            round,
            rng.fork(round as u64 * 100 + 99),
            key.clone(),
            dbs.acked.len() + dbs.pending.len() < 2 + MAX_EXTRA_DATABASES,
            Arc::clone(&stop),
        ));
        let load = rng.range(20, 300);
        load_ms += load;
        tokio::time::sleep(ms(load)).await;
        stop.store(true, Ordering::SeqCst);
        daemon.kill9().await;
        let mut violations = Vec::new();
        for (w, handle) in workers.into_iter().enumerate() {
            let (model, report) = handle.await.expect("load worker panicked");
            records[w] = model;
            acked += report.acked;
            unknown += report.unknown;
            violations.extend(report.violations);
        }
        if let Some((is_key, name, result)) = created.await.expect("creator panicked") {
            let names = if is_key { &mut keys } else { &mut dbs };
            match result {
                Outcome::Acked(()) => {
                    names.acked.insert(name);
                }
                Outcome::Unknown(_) => {
                    names.pending.insert(name);
                }
                Outcome::Refused(status, code, message) => {
                    violations.push(format!("creating {name}: {status} {code}: {message}"))
                }
            }
        }
        assert_no_violations(&violations, &format!("{context}: during the load"));
        daemon.restart().await;
        let violations = verify_world(&daemon, &mut keys, &mut dbs, &mut records, &context).await;
        assert_no_violations(&violations, &format!("{context}: after the restart"));
    }
    // At the end: a graceful restart changes nothing either.
    daemon.stop_graceful().await;
    daemon.restart().await;
    let context = format!("seed {seed}, after the final graceful restart");
    let violations = verify_world(&daemon, &mut keys, &mut dbs, &mut records, &context).await;
    assert_no_violations(&violations, &context);
    let present = records
        .iter()
        .flat_map(|m| m.values())
        .filter(|e| e.acked.is_some())
        .count();
    eprintln!(
        "[load] seed {seed}: {kills} kills after {load_ms} ms of load in all; {acked} acknowledged \
         operations, {unknown} cut by a kill; {present} records, {} keys, {} databases at the end; \
         {:.1} s",
        keys.acked.len(),
        dbs.acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked > 0, "the load acknowledged nothing");
}
