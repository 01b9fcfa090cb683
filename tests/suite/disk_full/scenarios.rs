//! A full disk loses nothing acknowledged, fails fast, keeps serving and recovers.

use super::*;

/// Writes that fail on a full disk fail cleanly and the daemon stays up; after space is freed
/// and the daemon restarted, everything acknowledged is there and writes work. (Hangs are
/// tolerated here, as unanswered writes: without the floor sled can block on ENOSPC.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_loses_nothing_acknowledged() {
    let seed = seed_from_env();
    let _report = SeedReport::new("disk_full", "full_disk_loses_nothing_acknowledged", seed);
    let mut rng = Rng::new(seed).fork(6);
    let started = Instant::now();
    let mut filled = fill_until_full(&mut rng, Hangs::Tolerate, Floor::Off).await;
    let acked = filled.acked();
    filled.small.grow(GROWN_MIB);
    let violations = restart_and_check(&mut filled, &mut rng).await;
    assert!(
        violations.is_empty(),
        "seed {seed}:\n  {}\ndaemon log (end):\n{}",
        violations.join("\n  "),
        log_tail(&filled.daemon)
    );
    eprintln!(
        "[disk_full] seed {seed}: {} of {SMALL_MIB} MiB: {acked} writes ({} KiB) acknowledged, \
         then {} failed (first {:?}) and {} hung; all acknowledged records back after the \
         restart; {:.1} s",
        filled.kind(),
        filled.acked_bytes >> 10,
        filled.failures.len(),
        filled.failures.first(),
        filled.hung,
        started.elapsed().as_secs_f64()
    );
    filled.finish().await;
}

/// No write hangs on a full disk, every acknowledged record still reads back while it is full,
/// and once space is freed writes succeed again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_fast_keeps_serving_and_recovers() {
    let seed = seed_from_env();
    let _report = SeedReport::new(
        "disk_full",
        "full_disk_fails_fast_keeps_serving_and_recovers",
        seed,
    );
    let mut rng = Rng::new(seed).fork(7);
    let started = Instant::now();
    let mut filled = fill_until_full(&mut rng, Hangs::Fail, Floor::FourMiB).await;
    let client = filled.daemon.client();
    let probe = HangProbe::new(&filled.daemon);
    let mut violations = Vec::new();
    // Every acknowledged write reads back on the full disk.
    let bad = check(&client, &mut filled.model, false).await;
    if !bad.is_empty() {
        violations.push(format!(
            "on the full disk, {} of {} records do not read: {}",
            bad.len(),
            filled.model.len(),
            summary(&bad, 6)
        ));
    }
    // Free space: writes succeed again within 10 s, and keep succeeding.
    filled.small.grow(GROWN_MIB);
    let t_grow = Instant::now();
    let mut recovered = None;
    let mut retries = 0;
    while recovered.is_none() && t_grow.elapsed() < Duration::from_secs(10) {
        let key = format!("after-{retries:03}");
        let value = value_for(&key, &mut rng);
        let answer = put(&probe, &client, &key, &value, Hangs::Fail).await;
        let entry = filled.model.entry(key).or_default();
        match answer {
            Put::Acked => {
                entry.ack(Some(value));
                recovered = Some(t_grow.elapsed());
            }
            _ => {
                entry.unknown(Some(value));
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    match recovered {
        None => violations.push(format!(
            "writes still fail 10 s after space was freed ({retries} tries): the store does \
             not recover from ENOSPC without a restart"
        )),
        Some(_) => {
            for i in 0..40 {
                let key = format!("more-{i:03}");
                let value = value_for(&key, &mut rng);
                match put(&probe, &client, &key, &value, Hangs::Fail).await {
                    Put::Acked => filled.model.entry(key).or_default().ack(Some(value)),
                    other => {
                        violations.push(format!("write {key} after space was freed: {other:?}"));
                        break;
                    }
                }
            }
            let bad = check(&client, &mut filled.model, false).await;
            if !bad.is_empty() {
                violations.push(format!(
                    "after space was freed, records do not read: {}",
                    summary(&bad, 6)
                ));
            }
        }
    }
    let (status, report) = json(&client, Method::GET, "/v1/audit/verify", None).await;
    if status != 200 || report["ok"] != true {
        violations.push(format!(
            "activity log before the restart: {status} {report}"
        ));
    }
    let tail = log_tail(&filled.daemon);
    violations.extend(restart_and_check(&mut filled, &mut rng).await);
    assert!(
        violations.is_empty(),
        "seed {seed}:\n  {}\ndaemon log before the restart (end):\n{tail}",
        violations.join("\n  "),
    );
    eprintln!(
        "[disk_full] seed {seed}: {}: every record served while full; writes back {:?} after \
         growing to {GROWN_MIB} MiB ({retries} failed retries); {:.1} s",
        filled.kind(),
        recovered.unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    filled.finish().await;
}
