//! Fuzzing inside `cargo test`: the cargo-fuzz harnesses (`fuzz/src/lib.rs`, included below as
//! a module) run over a deterministic stream of inputs, so CI exercises the same code paths as
//! `scripts/fuzz.sh` without a sanitizer build.
//!
//! - `mini_fuzz_*`: [`CASES`] inputs per target, a fifth of them random bytes and the rest
//!   mutations (bit flips, interesting integers, inserts, deletes, truncation, splices) of the
//!   seeds. The generator is seeded by the target name: a failure reproduces exactly, and the
//!   failing input is also written to `target/tmp/fuzz-failures/` for `cargo fuzz run`.
//! - `replay_regressions`: every input under `fuzz/regressions/<target>/` (crashes found by
//!   the fuzzer) must now pass.
//! - `seeds_are_current`: the committed seeds still reach past authentication with today's
//!   formats (regenerate them with `cargo test --test suite -- --ignored fuzz_regressions::write_seeds`).
//! - Open bugs found by fuzzing are `#[ignore = "bug: …"]` tests until `src/` is fixed.

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use crate::common::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use harness::{KeystoreFixture, RouterFixture, RouterFuzzer};

/// Inputs per target in each `mini_fuzz_*` test.
const CASES: usize = 2_000;

/// `fuzz/regressions/KNOWN_OPEN`: regression inputs (`<target>/<file>`) of bugs not yet fixed
/// in `src/`, skipped by `replay_regressions` and replayed by their own ignored test.
const KNOWN_OPEN_FILE: &str = include_str!("../../fuzz/regressions/KNOWN_OPEN");

fn known_open(target: &str, name: &str) -> bool {
    let entry = format!("{target}/{name}");
    KNOWN_OPEN_FILE
        .lines()
        .map(str::trim)
        .any(|line| !line.starts_with('#') && line == entry)
}

const TARGETS: [&str; 4] = ["open_record", "backup_file", "keystore_file", "router"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Values that tend to sit on boundaries of length fields and counters.
const INTERESTING_U32: [u32; 9] = [0, 1, 2, 16, 52, 0x7f, 0xffff, 0x7fff_ffff, u32::MAX];
const INTERESTING_U8: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', 0xc3];

/// One mutation of `input`, possibly using `pool` for splices.
fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let len = input.len();
    match rng.index(9) {
        0 if len > 0 => {
            let bit = rng.index(len * 8);
            input[bit / 8] ^= 1 << (bit % 8);
        }
        1 if len > 0 => {
            let at = rng.index(len);
            input[at] = if rng.index(2) == 0 {
                INTERESTING_U8[rng.index(INTERESTING_U8.len())]
            } else {
                rng.byte()
            };
        }
        2 => {
            let at = rng.index(len + 1);
            let count = 1 + rng.index(16);
            let extra = rng.bytes(count);
            input.splice(at..at, extra);
        }
        3 if len > 0 => {
            let at = rng.index(len);
            let end = (at + 1 + rng.index(32)).min(len);
            input.drain(at..end);
        }
        4 => input.truncate(rng.index(len + 1)),
        5 if len > 0 => {
            let at = rng.index(len);
            let end = (at + 1 + rng.index(64)).min(len);
            let copy = input[at..end].to_vec();
            let to = rng.index(len + 1);
            input.splice(to..to, copy);
        }
        6 if len >= 4 => {
            let at = rng.index(len - 3);
            let value = INTERESTING_U32[rng.index(INTERESTING_U32.len())];
            let bytes = if rng.index(2) == 0 {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            input[at..at + 4].copy_from_slice(&bytes);
        }
        7 if !pool.is_empty() => {
            let other = &pool[rng.index(pool.len())];
            let at = rng.index(len + 1);
            let from = rng.index(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
        // The mode and flag bytes steer every harness: change them often.
        _ if len >= 2 => {
            let at = rng.index(2);
            input[at] = rng.byte();
        }
        _ => input.push(rng.byte()),
    }
}

/// The seeds of `target`: generated in process, plus committed seed and regression files
/// (but not the inputs of open bugs, whose mutations would keep failing the mini-fuzz).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = harness::seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, bytes)| bytes)
        .collect();
    for dir in ["seeds", "regressions"] {
        for (name, bytes) in files(&fuzz_dir().join(dir).join(target)) {
            if !known_open(target, &name) {
                out.push(bytes);
            }
        }
    }
    out
}

/// Files of a directory, sorted by name (empty if it does not exist).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&p).expect("read input");
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Runs `run` on `input`; on a panic, saves the input and fails with enough to reproduce it.
fn check(target: &str, label: &str, input: &[u8], run: &dyn Fn(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| run(input))).is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        std::fs::create_dir_all(&dir).expect("create failure dir");
        let path = dir.join(format!("{target}-{label}"));
        std::fs::write(&path, input).expect("save failing input");
        panic!(
            "{target} {label} panicked (message above); input saved to {} \
             (replay: scripts/fuzz.sh --replay {target} {}); hex: {}",
            path.display(),
            path.display(),
            hex::encode(input)
        );
    }
}

/// [`CASES`] deterministic inputs through `run`.
fn mini_fuzz(target: &str, run: &dyn Fn(&[u8])) {
    let pool = corpus(target);
    assert!(!pool.is_empty(), "no seeds for {target}");
    let mut rng = Rng::for_target(target);
    for case in 0..CASES {
        let input = if rng.index(5) == 0 {
            let len = rng.index(300);
            rng.bytes(len)
        } else {
            let mut input = pool[rng.index(pool.len())].clone();
            for _ in 0..1 + rng.index(4) {
                mutate_once(&mut rng, &mut input, &pool);
            }
            input
        };
        check(target, &format!("case-{case}"), &input, run);
    }
}

#[test]
fn mini_fuzz_open_record() {
    mini_fuzz("open_record", &harness::open_record);
}

#[test]
fn mini_fuzz_backup_file() {
    mini_fuzz("backup_file", &harness::backup_file);
}

#[test]
fn mini_fuzz_keystore_file() {
    let fixture = KeystoreFixture::new();
    mini_fuzz("keystore_file", &|data| fixture.run(data));
}

#[test]
fn mini_fuzz_router() {
    // Rebuilt every ROUTER_RESET_EVERY inputs, as in the fuzz target.
    let fuzzer = std::cell::RefCell::new(RouterFuzzer::new());
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<Option<u16>, usize>::new());
    mini_fuzz("router", &|data| {
        let status = fuzzer.borrow_mut().run(data);
        *statuses.borrow_mut().entry(status).or_default() += 1;
    });
    let statuses = statuses.into_inner();
    eprintln!("router statuses (None = not an HTTP request): {statuses:?}");
    // The generator must keep reaching the handlers, not just the authentication and the
    // URI parser: successes and several kinds of refusal.
    let count = |code: u16| statuses.get(&Some(code)).copied().unwrap_or(0);
    assert!(
        count(200) + count(201) + count(204) >= CASES / 20,
        "{statuses:?}"
    );
    for code in [400, 401, 404, 405] {
        assert!(count(code) > 0, "no {code} in {statuses:?}");
    }
}

/// Every crash input the fuzzer ever found passes (except bugs still open in `src/`).
#[test]
fn replay_regressions() {
    let keystore = KeystoreFixture::new();
    let router = RouterFixture::new();
    let mut replayed = 0;
    for target in TARGETS {
        for (name, bytes) in files(&fuzz_dir().join("regressions").join(target)) {
            if known_open(target, &name) {
                continue;
            }
            let run: &dyn Fn(&[u8]) = match target {
                "open_record" => &harness::open_record,
                "backup_file" => &harness::backup_file,
                "keystore_file" => &|d| keystore.run(d),
                _ => &|d| {
                    router.run(d);
                },
            };
            check(target, &name, &bytes, run);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} regression inputs");
}

/// The committed seeds match what the harness generates today, in kind: the record seed
/// opens, the backup seed reads through its payload, the keystore seed opens with its keys.
#[test]
fn seeds_are_current() {
    use envault::crypto::{Cipher, Envelope, EnvelopeKind, SecretKey};

    for (target, name, _) in harness::seeds() {
        let path = fuzz_dir().join("seeds").join(target).join(&name);
        assert!(
            path.is_file(),
            "missing seed {} (run: cargo test --test suite -- --ignored fuzz_regressions::write_seeds)",
            path.display()
        );
    }
    let read = |target: &str, name: &str| -> Vec<u8> {
        let bytes =
            std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).expect("read seed");
        bytes[1..].to_vec()
    };
    let cipher = |key: &[u8; 32]| Cipher::new(&SecretKey::from_slice(key).expect("key"));

    let record = read("open_record", "seed-record");
    let (label, plain) = Envelope(EnvelopeKind::Record)
        .open(
            &cipher(&harness::RECORD_KEY),
            harness::RECORD_CONTEXT,
            record,
        )
        .expect("the record seed opens");
    assert_eq!((label, plain.as_slice()), (7, &b"hello record"[..]));

    let backup = read("backup_file", "seed-backup-3-records");
    let mut input = backup.as_slice();
    let front = envault::backup::format::read_front(&mut input).expect("the backup seed's front");
    let records = envault::backup::stream_io::read_payload(
        input,
        &cipher(&harness::BACKUP_DEK),
        &front,
        |_, _| Ok(()),
    )
    .expect("the backup seed's payload");
    assert_eq!(records, 3);

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("master.key"), harness::MASTER_KEY).expect("master key");
    std::fs::write(
        dir.path().join("keystore.bin"),
        read("keystore_file", "seed-keystore"),
    )
    .expect("keystore");
    let keystore =
        envault::keystore::file::FileKeystore::open(dir.path(), &dir.path().join("master.key"))
            .expect("the keystore seed opens");
    use envault::keystore::RootKeyBackend;
    assert_eq!(keystore.key_ids().expect("list keys").len(), 2);
}

/// Writes `fuzz/seeds/<target>/<name>` from the harness's generators.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand after a format change"]
fn write_seeds() {
    for (target, name, bytes) in harness::seeds() {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).expect("create seed dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}

/// Found by the `backup_file` target in its first minute
/// (`fuzz/regressions/backup_file/crash-nonce-prefix-char-boundary`, 628 bytes: a valid
/// front whose header has `"nonce_prefix":"€12;33445566"`).
///
/// `BackupFront::prefix` checks that `nonce_prefix` is 14 *bytes*, then slices the string at
/// byte offsets `2i..2i+2`; a multi-byte character across such an offset panics
/// (src/backup/format.rs:164, "end byte index 2 is not a char boundary; it is inside '€'")
/// instead of returning `Invalid("nonce prefix")`. `read_payload` calls it first, before any
/// chunk is authenticated, and so does `POST /v1/backups/{id}/restore`: a backup file edited
/// on disk panics the restore handler (connection dropped, no activity-log event) instead
/// of answering `invalid backup`.
#[test]
fn backup_nonce_prefix_with_multibyte_char_is_refused_not_a_panic() {
    use envault::backup::format::{read_front, write_front, BackupFormatError, KeySlot};
    use envault::crypto::{Cipher, SecretKey};

    let crash =
        std::fs::read(fuzz_dir().join("regressions/backup_file/crash-nonce-prefix-char-boundary"))
            .expect("regression input");
    check(
        "backup_file",
        "crash-nonce-prefix-char-boundary",
        &crash,
        &harness::backup_file,
    );

    let cipher = Cipher::new(&SecretKey::from_slice(&harness::BACKUP_DEK).expect("key"));
    let slot = KeySlot {
        seq: 1,
        key_version: 1,
        wrapped: vec![7; 69],
    };
    // 14 bytes each; the first two put a character across an even byte offset.
    for prefix in [
        "€12;33445566",
        "0\u{e9}00112233445",
        "ééééééé",
        "+f+f+f+f+f+f+x",
    ] {
        let mut header = harness::seed_header(0);
        header.nonce_prefix = prefix.to_string();
        let mut file = Vec::new();
        write_front(&mut file, &header, &slot).expect("write front");
        let mut input = file.as_slice();
        let front = read_front(&mut input).expect("the front itself is well formed");
        let result = catch_unwind(AssertUnwindSafe(|| {
            envault::backup::stream_io::read_payload(input, &cipher, &front, |_, _| Ok(()))
        }));
        match result {
            Ok(Err(BackupFormatError::Invalid(_))) => {}
            Ok(other) => panic!("nonce prefix {prefix:?}: expected Invalid, got {other:?}"),
            Err(_) => panic!("nonce prefix {prefix:?}: read_payload panicked"),
        }
    }
}
