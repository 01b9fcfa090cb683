//! The fuzz harnesses of envault, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by
//! the deterministic mini-fuzz of `tests/suite/fuzz_regressions.rs`, which includes this file as a
//! module so that `cargo test` runs exactly the code paths the fuzzer runs.
//!
//! Every harness takes arbitrary bytes and must return normally: a panic (an `unwrap`, an
//! out-of-bounds slice, an overflow with debug assertions, a failed invariant below) is a
//! finding. Keys are fixed so that seeds made with them (see the `seed_*` functions) open,
//! letting the fuzzer start from inputs that reach past authentication.
//!
//! The first byte of most inputs selects a mode; the rest is the payload of that mode.
//!
//! Only crates that the main package also depends on are used here, so the file compiles both
//! inside the fuzz crate and inside envault's integration tests.
#![allow(clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use envault::backup::format::{
    drain_records, encode_record, read_front, stream_aad, write_front, BackedUpDatabase,
    BackupHeader, KeySlot,
};
use envault::backup::stream_io::{read_payload, PayloadWriter};
use envault::crypto::bindings::backup_dek_context;
use envault::crypto::envelope::{context, OVERHEAD};
use envault::crypto::stream::{StreamSealer, CHUNK_SIZE};
use envault::crypto::{Cipher, CryptoError, Envelope, EnvelopeKind, SecretKey};
use envault::keystore::file::FileKeystore;
use envault::keystore::{RootKeyBackend, RootKeyRef};
use uuid::Uuid;

/// Key every `open_record` seed is sealed with.
pub const RECORD_KEY: [u8; 32] = [0x52; 32];
/// The backup DEK every `backup_file` seed payload is sealed with.
pub const BACKUP_DEK: [u8; 32] = [0x44; 32];
/// The backup (root) key that wraps [`BACKUP_DEK`] in the seeds' key slots.
pub const BACKUP_ROOT_KEY: [u8; 32] = [0x42; 32];
/// The master key of the `keystore_file` harness.
pub const MASTER_KEY: [u8; 32] = [0x4d; 32];
/// The context records are bound to in the `open_record` seeds.
pub const RECORD_CONTEXT: &[u8] = b"\x00\x00\x00\x06record\x00\x00\x00\x02db\x00\x00\x00\x01k";
/// The keystore file's envelope context (`keystore::file`).
const KEYSTORE_CONTEXT: &[u8] = b"envault/keystore";
/// Bytes of one keystore entry: key id 16, version 4, key 32.
const KEYSTORE_ENTRY: usize = 16 + 4 + 32;

const ALL_KINDS: [EnvelopeKind; 5] = [
    EnvelopeKind::Record,
    EnvelopeKind::WrappedDek,
    EnvelopeKind::AppWrap,
    EnvelopeKind::Keystore,
    EnvelopeKind::BackupDek,
];

fn cipher_of(key: &[u8; 32]) -> Cipher {
    Cipher::new(&SecretKey::from_slice(key).expect("32-byte key"))
}

fn cached(cell: &'static OnceLock<Cipher>, key: &[u8; 32]) -> &'static Cipher {
    cell.get_or_init(|| cipher_of(key))
}

fn record_cipher() -> &'static Cipher {
    static CELL: OnceLock<Cipher> = OnceLock::new();
    cached(&CELL, &RECORD_KEY)
}

fn dek_cipher() -> &'static Cipher {
    static CELL: OnceLock<Cipher> = OnceLock::new();
    cached(&CELL, &BACKUP_DEK)
}

fn backup_root_cipher() -> &'static Cipher {
    static CELL: OnceLock<Cipher> = OnceLock::new();
    cached(&CELL, &BACKUP_ROOT_KEY)
}

fn master_cipher() -> &'static Cipher {
    static CELL: OnceLock<Cipher> = OnceLock::new();
    cached(&CELL, &MASTER_KEY)
}

/// Splits `data` at `at` (clamped).
fn split_clamped(data: &[u8], at: usize) -> (&[u8], &[u8]) {
    data.split_at(at.min(data.len()))
}

// ---------------------------------------------------------------------------------------------
// open_record
// ---------------------------------------------------------------------------------------------

/// Envelope parsing and opening, and the raw AEAD open with attacker-chosen lengths.
///
/// Modes (first byte % 4):
/// 0. the rest is an envelope of any kind, opened under the record key and [`RECORD_CONTEXT`];
/// 1. byte 1 is a context length, then the context, then the envelope;
/// 2. bytes 1..3 are nonce, tag and AAD lengths (0..=31), then those fields, then ciphertext,
///    given to `Cipher::open_in_place`;
/// 3. seal the rest (label and context from its first bytes), open it back, then flip the bit
///    the input names and check the result no longer opens.
pub fn open_record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => open_envelope(RECORD_CONTEXT, rest),
        1 => {
            let Some((&len, rest)) = rest.split_first() else {
                return;
            };
            let (ctx, sealed) = split_clamped(rest, usize::from(len));
            open_envelope(ctx, sealed);
        }
        2 => open_raw(rest),
        _ => seal_round_trip(rest),
    }
}

fn open_envelope(ctx: &[u8], sealed: &[u8]) {
    for kind in ALL_KINDS {
        let envelope = Envelope(kind);
        let label = envelope.label(sealed);
        let opened = envelope.open(record_cipher(), ctx, sealed.to_vec());
        match &opened {
            Ok((opened_label, plain)) => {
                assert_eq!(label.as_ref().ok(), Some(opened_label), "label of {kind:?}");
                assert_eq!(plain.len() + OVERHEAD, sealed.len(), "plaintext length");
                assert_eq!(&sealed[..4], kind.magic(), "opened under the wrong kind");
            }
            Err(err) => {
                // A header that parses only ever fails authentication, as one coarse error.
                if label.is_ok() {
                    assert_eq!(*err, CryptoError::Open, "{kind:?}");
                } else {
                    assert!(
                        matches!(err, CryptoError::Malformed(_)),
                        "{kind:?}: {err:?}"
                    );
                }
            }
        }
        if sealed.len() < OVERHEAD || &sealed[..4] != kind.magic() {
            assert!(
                label.is_err() && opened.is_err(),
                "{kind:?} accepted a bad header"
            );
        }
    }
}

fn open_raw(data: &[u8]) {
    let [n, t, a, rest @ ..] = data else {
        return;
    };
    let (nonce, rest) = split_clamped(rest, usize::from(n % 32));
    let (tag, rest) = split_clamped(rest, usize::from(t % 32));
    let (aad, ciphertext) = split_clamped(rest, usize::from(a % 32));
    let mut buffer = ciphertext.to_vec();
    let result = record_cipher().open_in_place(nonce, aad, &mut buffer, tag);
    if nonce.len() != 12 {
        assert_eq!(result, Err(CryptoError::NonceLength));
    } else if tag.len() != 16 {
        assert_eq!(result, Err(CryptoError::Open));
    }
    assert_eq!(
        buffer.len(),
        ciphertext.len(),
        "open_in_place changed the length"
    );
}

fn seal_round_trip(data: &[u8]) {
    let [l, c, b0, b1, rest @ ..] = data else {
        return;
    };
    let label = u32::from(*l) << 8 | 0x5a;
    let (ctx, plain) = split_clamped(rest, usize::from(c % 64));
    let envelope = Envelope(EnvelopeKind::Record);
    let sealed = envelope
        .seal(record_cipher(), label, ctx, plain)
        .expect("seal");
    assert_eq!(sealed.len(), plain.len() + OVERHEAD);
    assert_eq!(envelope.label(&sealed), Ok(label));
    let (opened_label, opened) = envelope
        .open(record_cipher(), ctx, sealed.clone())
        .expect("a fresh envelope opens");
    assert_eq!((opened_label, opened.as_slice()), (label, plain));
    let bit = usize::from(u16::from_le_bytes([*b0, *b1])) % (sealed.len() * 8);
    let mut bad = sealed;
    bad[bit / 8] ^= 1 << (bit % 8);
    assert!(
        envelope.open(record_cipher(), ctx, bad).is_err(),
        "bit {bit} flipped and the envelope still opened"
    );
}

// ---------------------------------------------------------------------------------------------
// backup_file
// ---------------------------------------------------------------------------------------------

/// Backup files: the front (preamble, key slots, JSON header), the STREAM payload and the
/// record framing inside it.
///
/// Modes (first byte % 4):
/// 0, 1. the rest is a whole backup file: `read_front`, then open the key slot under the
///    backup root key, then `read_payload` under the fixed DEK;
/// 2. `drain_records` on arbitrary bytes fed in two parts (byte 1 = split point), checked
///    against a reference parser;
/// 3. byte 1 = record count, the rest is payload plaintext, sealed as a real stream behind a
///    valid front, then read back (reaches the record framing behind authentication).
pub fn backup_file(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 | 1 => parse_backup(rest),
        2 => {
            let Some((&at, rest)) = rest.split_first() else {
                return;
            };
            drain_in_two_parts(rest, usize::from(at));
        }
        _ => {
            let Some((&count, plain)) = rest.split_first() else {
                return;
            };
            sealed_payload(u64::from(count), plain);
        }
    }
}

fn parse_backup(file: &[u8]) {
    let mut input = file;
    let Ok(front) = read_front(&mut input) else {
        return;
    };
    assert_eq!(
        front.payload_offset as usize,
        file.len() - input.len(),
        "payload_offset disagrees with the bytes read_front consumed"
    );
    assert!(front.slot_index < 2);
    assert!(front.slot.wrapped.len() <= 72);
    let ctx = backup_dek_context(
        front.header.backup_id.as_bytes(),
        front.header.backup_key_id.as_bytes(),
    );
    if let Ok((_, dek)) = Envelope(EnvelopeKind::BackupDek).open(
        backup_root_cipher(),
        &ctx,
        front.slot.wrapped.clone(),
    ) {
        let _ = SecretKey::from_slice(&dek);
    }
    let mut seen = 0u64;
    let result = read_payload(input, dek_cipher(), &front, |_, _| {
        seen += 1;
        Ok(())
    });
    if let Ok(records) = result {
        assert_eq!(records, front.header.record_count);
        assert_eq!(records, seen);
    }
}

/// Decoded records: (key, value) pairs.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Reference parser of `key len u32 | key | value len u32 | value` records: the complete
/// records at the front, and how many bytes they take.
fn reference_records(mut buf: &[u8]) -> (Records, usize) {
    let total = buf.len();
    let mut out = Vec::new();
    while let Some(key_len) = buf.get(..4) {
        let key_len = u32::from_be_bytes(key_len.try_into().expect("4 bytes")) as usize;
        let Some(key) = buf.get(4..4 + key_len) else {
            break;
        };
        let Some(value_len) = buf.get(4 + key_len..8 + key_len) else {
            break;
        };
        let value_len = u32::from_be_bytes(value_len.try_into().expect("4 bytes")) as usize;
        let Some(value) = buf.get(8 + key_len..8 + key_len + value_len) else {
            break;
        };
        out.push((key.to_vec(), value.to_vec()));
        buf = &buf[8 + key_len + value_len..];
    }
    (out, total - buf.len())
}

fn drain_in_two_parts(data: &[u8], at: usize) {
    let (first, second) = split_clamped(data, at);
    let mut seen = Vec::new();
    let mut buffer = first.to_vec();
    drain_records(&mut buffer, |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .expect("the sink never fails");
    buffer.extend_from_slice(second);
    drain_records(&mut buffer, |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .expect("the sink never fails");
    let (expected, used) = reference_records(data);
    assert_eq!(
        seen, expected,
        "drain_records disagrees with the reference parser"
    );
    assert_eq!(buffer, &data[used..], "drain_records left the wrong tail");
}

/// A backup header as the daemon writes it.
pub fn seed_header(record_count: u64) -> BackupHeader {
    BackupHeader {
        backup_id: Uuid::from_u128(0x0b),
        created_at: "2026-01-01T00:00:00Z".into(),
        database: BackedUpDatabase {
            id: Uuid::from_u128(0xdb),
            name: "fuzzdb".into(),
            crn: "crn:v1:envault:local:a/fuzz:00000000-0000-0000-0000-000000000001:database:db"
                .into(),
            key_id: Uuid::from_u128(0x4b),
        },
        backup_key_id: Uuid::from_u128(0x4b),
        chunk_size: CHUNK_SIZE as u32,
        record_count,
        nonce_prefix: "00112233445566".into(),
    }
}

fn seed_slot(header: &BackupHeader) -> KeySlot {
    let ctx = backup_dek_context(header.backup_id.as_bytes(), header.backup_key_id.as_bytes());
    KeySlot {
        seq: 1,
        key_version: 1,
        wrapped: Envelope(EnvelopeKind::BackupDek)
            .seal(backup_root_cipher(), 1, &ctx, &BACKUP_DEK)
            .expect("seal the backup DEK"),
    }
}

const SEED_PREFIX: [u8; 7] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66];

/// A complete backup file holding `records`, made by the same code the daemon uses.
pub fn seed_backup_file(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let header = seed_header(records.len() as u64);
    let mut out = Vec::new();
    let header_bytes = write_front(&mut out, &header, &seed_slot(&header)).expect("write front");
    let mut payload =
        PayloadWriter::new(out, dek_cipher(), SEED_PREFIX, &stream_aad(&header_bytes));
    for (key, value) in records {
        payload.add(key, value).expect("add record");
    }
    let (out, written) = payload.finish().expect("finish payload");
    assert_eq!(written, records.len() as u64);
    out
}

fn sealed_payload(record_count: u64, plain: &[u8]) {
    let header = seed_header(record_count);
    let mut file = Vec::new();
    let header_bytes = write_front(&mut file, &header, &seed_slot(&header)).expect("write front");
    // Chunked as `PayloadWriter` does: full chunks while more than one chunk remains, then
    // the rest (possibly empty, possibly full) as the last chunk.
    let mut sealer = StreamSealer::new(dek_cipher(), SEED_PREFIX, &stream_aad(&header_bytes));
    let mut rest = plain;
    while rest.len() > CHUNK_SIZE {
        let mut chunk = rest[..CHUNK_SIZE].to_vec();
        sealer.seal_next(&mut chunk).expect("seal");
        file.extend_from_slice(&chunk);
        rest = &rest[CHUNK_SIZE..];
    }
    let mut last = rest.to_vec();
    sealer.seal_last(&mut last).expect("seal");
    file.extend_from_slice(&last);
    let mut input = file.as_slice();
    let front = read_front(&mut input).expect("a front written by write_front reads back");
    let mut seen = Vec::new();
    let result = read_payload(input, dek_cipher(), &front, |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(())
    });
    let (expected, used) = reference_records(plain);
    let valid = used == plain.len() && expected.len() as u64 == record_count;
    match result {
        Ok(n) => {
            assert!(
                valid,
                "read_payload accepted a payload the reference parser refuses"
            );
            assert_eq!(n, record_count);
            assert_eq!(seen, expected);
        }
        Err(err) => assert!(!valid, "read_payload refused a valid payload: {err}"),
    }
}

// ---------------------------------------------------------------------------------------------
// keystore_file
// ---------------------------------------------------------------------------------------------

/// A data dir with a fixed `master.key`, reused across runs (files are removed after each).
pub struct KeystoreFixture {
    dir: tempfile::TempDir,
    master: PathBuf,
}

impl KeystoreFixture {
    /// A temp dir (under `$TMPDIR`) holding `master.key` = [`MASTER_KEY`].
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("envault-fuzz-keystore")
            .tempdir()
            .expect("temp dir");
        let master = dir.path().join("master.key");
        std::fs::write(&master, MASTER_KEY).expect("write master key");
        Self { dir, master }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn clean(&self) {
        for name in ["keystore.bin", "keystore.bin.tmp"] {
            let _ = std::fs::remove_file(self.path().join(name));
        }
    }

    /// `FileKeystore::open` over one fuzz input.
    ///
    /// Modes (first byte % 4):
    /// 0. the rest is `keystore.bin`;
    /// 1. the rest is `keystore.bin.tmp` and there is no `keystore.bin` (crash before the first
    ///    rename);
    /// 2. the rest is the keystore *plaintext*, sealed with the master key (reaches the entry
    ///    decoder behind authentication), checked against the documented layout;
    /// 3. byte 1 = split point: the first part is `keystore.bin`, the second is a plaintext
    ///    sealed into `keystore.bin.tmp` (the recovery paths).
    pub fn run(&self, data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        self.clean();
        let main = self.path().join("keystore.bin");
        let temp = self.path().join("keystore.bin.tmp");
        let mut expect_ok = None;
        match mode % 4 {
            0 => std::fs::write(&main, rest).expect("write keystore.bin"),
            1 => std::fs::write(&temp, rest).expect("write keystore.bin.tmp"),
            2 => {
                std::fs::write(&main, seal_keystore(rest)).expect("write keystore.bin");
                expect_ok = Some(keystore_plain_is_valid(rest));
            }
            _ => {
                let Some((&at, rest)) = rest.split_first() else {
                    return;
                };
                let (file, plain) = split_clamped(rest, usize::from(at));
                std::fs::write(&main, file).expect("write keystore.bin");
                std::fs::write(&temp, seal_keystore(plain)).expect("write keystore.bin.tmp");
            }
        }
        let result = FileKeystore::open(self.path(), &self.master);
        if let Some(valid) = expect_ok {
            assert_eq!(
                result.is_ok(),
                valid,
                "FileKeystore::open disagrees with the layout: {:?}",
                result.as_ref().err()
            );
        }
        if let Ok(keystore) = result {
            for key_id in keystore
                .key_ids()
                .expect("the file keystore lists from memory")
            {
                let versions = keystore.versions(key_id).expect("versions from memory");
                assert!(!versions.is_empty(), "a listed key without versions");
                assert!(
                    versions.windows(2).all(|w| w[0] < w[1]),
                    "versions unsorted"
                );
                let newest = RootKeyRef {
                    key_id,
                    version: *versions.last().expect("non-empty"),
                };
                let sealed = keystore
                    .seal(newest, EnvelopeKind::AppWrap, b"fuzz", b"x")
                    .expect("a loaded key seals");
                let plain = keystore
                    .open(key_id, EnvelopeKind::AppWrap, b"fuzz", sealed)
                    .expect("and opens its own envelope");
                assert_eq!(plain.as_slice(), b"x");
            }
        }
        self.clean();
    }
}

impl Default for KeystoreFixture {
    fn default() -> Self {
        Self::new()
    }
}

fn seal_keystore(plain: &[u8]) -> Vec<u8> {
    Envelope(EnvelopeKind::Keystore)
        .seal(master_cipher(), 0, KEYSTORE_CONTEXT, plain)
        .expect("seal keystore")
}

/// The keystore plaintext layout: `count u32 BE | count x (id 16 | version u32 | key 32)`.
fn keystore_plain_is_valid(plain: &[u8]) -> bool {
    match plain.get(..4) {
        Some(count) => {
            let count = u32::from_be_bytes(count.try_into().expect("4 bytes")) as usize;
            count.checked_mul(KEYSTORE_ENTRY) == Some(plain.len() - 4)
        }
        None => false,
    }
}

/// A keystore plaintext with `entries` (key id, version, material).
pub fn seed_keystore_plain(entries: &[(u128, u32, [u8; 32])]) -> Vec<u8> {
    let mut plain = (entries.len() as u32).to_be_bytes().to_vec();
    for (id, version, key) in entries {
        plain.extend_from_slice(Uuid::from_u128(*id).as_bytes());
        plain.extend_from_slice(&version.to_be_bytes());
        plain.extend_from_slice(key);
    }
    plain
}

/// A real `keystore.bin` written by `FileKeystore` under [`MASTER_KEY`] with two keys.
pub fn seed_keystore_file() -> Vec<u8> {
    let fixture = KeystoreFixture::new();
    let keystore = FileKeystore::open(fixture.path(), &fixture.master).expect("open keystore");
    for (id, version) in [(1u128, 1u32), (1, 2), (2, 1)] {
        let key = RootKeyRef {
            key_id: Uuid::from_u128(id),
            version,
        };
        let material = SecretKey::from_slice(&[id as u8 * 16 + version as u8; 32]).expect("key");
        keystore.insert(key, material).expect("insert");
    }
    drop(keystore);
    std::fs::read(fixture.path().join("keystore.bin")).expect("read keystore.bin")
}

// ---------------------------------------------------------------------------------------------
// router
// ---------------------------------------------------------------------------------------------

/// Methods the router harness sends (selected by the low 3 bits of byte 0).
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "GET",
];

/// Route templates (byte 1 % len); `{}` are replaced by path segments. Index 0 is special: the
/// first segment is sent as the raw path (and query) with no encoding.
pub const ROUTES: [&str; 29] = [
    "",
    "/v1/health",
    "/v1/keys",
    "/v1/keys/{}",
    "/v1/keys/{}/wrap",
    "/v1/keys/{}/unwrap",
    "/v1/keys/{}/rewrap",
    "/v1/keys/{}/rotate",
    "/v1/keys/{}/rotation",
    "/v1/keys/{}/disable",
    "/v1/keys/{}/enable",
    "/v1/databases",
    "/v1/databases/{}",
    "/v1/databases/{}/records",
    "/v1/databases/{}/records/{}",
    "/v1/databases/{}/restore",
    "/v1/databases/{}/backups",
    "/v1/backups",
    "/v1/backups/{}",
    "/v1/backups/{}/restore",
    "/v1/authorizations",
    "/v1/authorizations/{}",
    "/v1/tokens",
    "/v1/tokens/{}",
    "/v1/audit",
    "/v1/audit/verify",
    "/v1/{}",
    "/{}",
    "/v1/keys/{}/{}",
];

/// Statuses the API documents. Anything else, 5xx in particular, is a finding.
const DOCUMENTED: [u16; 12] = [200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 423];

/// Path segments: escape everything but unreserved characters, so the handler sees exactly
/// the fuzzed bytes after percent-decoding.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Queries: escape only what cannot appear in a URI, so `&`, `=` and stray `%` reach the
/// query parser as they are.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'[')
    .add(b']');

/// One decoded fuzz request.
#[derive(Debug)]
pub struct FuzzRequest {
    /// Method.
    pub method: &'static str,
    /// Path and query.
    pub uri: Vec<u8>,
    /// `Authorization` header value, if any.
    pub authorization: Option<Vec<u8>>,
    /// `Content-Length` header value, if any.
    pub content_length: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

/// An in-process daemon: the axum router over a vault in a temp dir, with a key `fk` (granted
/// to databases and backups), a database `fdb` (one record `r1`), a backup of it, an operator
/// token and an app token for `fdb`. The router is stateful: requests that succeed change it
/// for the next ones (see [`RouterFuzzer`]).
pub struct RouterFixture {
    router: axum::Router,
    runtime: tokio::runtime::Runtime,
    operator: String,
    app: String,
    backup_id: String,
    _dir: tempfile::TempDir,
}

/// Names the fixture creates.
pub const FIXTURE_KEY: &str = "fk";
/// The fixture database.
pub const FIXTURE_DB: &str = "fdb";
/// The fixture record.
pub const FIXTURE_RECORD: &str = "r1";

impl RouterFixture {
    /// Builds the vault and router on a multi-thread runtime (backups use `block_in_place`).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("envault-fuzz-router")
            .tempdir()
            .expect("temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut config = envault::config::Config::load(None).expect("default config");
        config.data_dir = dir.path().join("data");
        config.keystore.master_key_file = PathBuf::new();
        config.backup.dir = PathBuf::new();
        let (router, state) = runtime.block_on(async {
            let vault = envault::service::Vault::open(&config).expect("open vault");
            envault::server::app(vault)
        });
        let operator = runtime
            .block_on(
                state
                    .vault
                    .issue_token(envault::store::TokenRole::Operator, Vec::new()),
            )
            .expect("operator token")
            .1
            .to_string();
        let mut fixture = Self {
            router,
            runtime,
            operator,
            app: String::new(),
            backup_id: String::new(),
            _dir: dir,
        };
        let auth = Some(format!("Bearer {}", fixture.operator).into_bytes());
        let setup = |method: &'static str, uri: &str, body: &str| {
            let (status, bytes) = fixture
                .send(FuzzRequest {
                    method,
                    uri: uri.as_bytes().to_vec(),
                    authorization: auth.clone(),
                    content_length: None,
                    body: body.as_bytes().to_vec(),
                })
                .expect("a valid request");
            assert!(
                status.is_success(),
                "setup {method} {uri}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default()
        };
        setup("POST", "/v1/keys", r#"{"name":"fk"}"#);
        for source in ["databases", "backups"] {
            let grant = format!(r#"{{"source":"{source}","target":"fk","roles":["Reader"]}}"#);
            setup("POST", "/v1/authorizations", &grant);
        }
        let db = setup("POST", "/v1/databases", r#"{"name":"fdb","key":"fk"}"#);
        setup("PUT", "/v1/databases/fdb/records/r1", "value one");
        let backup = setup("POST", "/v1/databases/fdb/backups", "");
        let db_id: Uuid = db["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("db id");
        fixture.backup_id = backup["id"].as_str().expect("backup id").to_string();
        fixture.app = fixture
            .runtime
            .block_on(
                state
                    .vault
                    .issue_token(envault::store::TokenRole::App, vec![db_id]),
            )
            .expect("app token")
            .1
            .to_string();
        fixture
    }

    /// Sends one request through the router and returns the status and body; `None` when the
    /// bytes do not form an HTTP request at all (invalid URI or header value), which a real
    /// connection would refuse before routing. Re-raises a handler's panic.
    pub fn send(
        &self,
        request: FuzzRequest,
    ) -> Option<(axum::http::StatusCode, axum::body::Bytes)> {
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let uri = axum::http::Uri::try_from(request.uri.as_slice()).ok()?;
        let mut builder = axum::http::Request::builder()
            .method(request.method)
            .uri(uri);
        if let Some(value) = &request.authorization {
            let value = axum::http::HeaderValue::from_bytes(value).ok()?;
            builder = builder.header(axum::http::header::AUTHORIZATION, value);
        }
        if let Some(length) = &request.content_length {
            builder = builder.header(axum::http::header::CONTENT_LENGTH, length.as_str());
        }
        let http_request = builder
            .body(axum::body::Body::from(request.body))
            .expect("request parts were validated");
        let router = self.router.clone();
        let task = self.runtime.spawn(async move {
            let response = router.oneshot(http_request).await.expect("infallible");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("response body")
                .to_bytes();
            (status, body)
        });
        match self.runtime.block_on(task) {
            Ok(answer) => Some(answer),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => panic!("request task failed: {err}"),
        }
    }

    /// Decodes a fuzz input into a request:
    ///
    /// - byte 0: bits 0-2 method, bits 3-5 `Authorization` choice, bits 6-7 `Content-Length`
    ///   choice;
    /// - byte 1: bits 0-6 route template ([`ROUTES`]), bit 7 = fill path parameters with
    ///   the fixture's names instead of the fuzzed segments;
    /// - the rest, split on `0xFF` into at most four parts: segment 1, segment 2, query, body.
    pub fn decode(&self, data: &[u8]) -> Option<FuzzRequest> {
        let [flags, route, rest @ ..] = data else {
            return None;
        };
        let method = METHODS[usize::from(flags & 7)];
        let mut parts = rest.splitn(4, |b| *b == 0xFF);
        let seg1 = parts.next().unwrap_or_default();
        let seg2 = parts.next().unwrap_or_default();
        let query = parts.next().unwrap_or_default();
        let body = parts.next().unwrap_or_default().to_vec();
        let template = ROUTES[usize::from(route & 0x7F) % ROUTES.len()];
        let fixture_names = route & 0x80 != 0;
        let mut uri = Vec::new();
        if template.is_empty() {
            uri.extend_from_slice(seg1);
        } else {
            let fixture_param = |position: usize| -> String {
                match (template, position) {
                    (t, 1) if t.starts_with("/v1/databases/") => FIXTURE_RECORD.into(),
                    (t, _) if t.starts_with("/v1/databases/") => FIXTURE_DB.into(),
                    (t, _) if t.starts_with("/v1/backups/") => self.backup_id.clone(),
                    _ => FIXTURE_KEY.into(),
                }
            };
            for (position, piece) in template.split("{}").enumerate() {
                if position > 0 {
                    let param = if fixture_names {
                        fixture_param(position - 1)
                    } else {
                        let segment = if position == 1 { seg1 } else { seg2 };
                        percent_encoding::percent_encode(segment, SEGMENT).to_string()
                    };
                    uri.extend_from_slice(param.as_bytes());
                }
                uri.extend_from_slice(piece.as_bytes());
            }
            if !query.is_empty() {
                uri.push(b'?');
                uri.extend_from_slice(
                    percent_encoding::percent_encode(query, QUERY)
                        .to_string()
                        .as_bytes(),
                );
            }
        }
        let authorization = match (flags >> 3) & 7 {
            0 => None,
            1 | 6 => Some(format!("Bearer {}", self.operator).into_bytes()),
            2 | 7 => Some(format!("Bearer {}", self.app).into_bytes()),
            3 => Some(b"Bearer evt_not-a-real-token".to_vec()),
            4 => Some(format!("Bearer   {} \t", self.operator).into_bytes()),
            _ => Some(format!("bearer {}", self.operator).into_bytes()),
        };
        let content_length = match flags >> 6 {
            0 => None,
            1 => Some(body.len().to_string()),
            2 => Some((1u64 << 40).to_string()),
            _ => Some(String::from("12abc")),
        };
        Some(FuzzRequest {
            method,
            uri,
            authorization,
            content_length,
            body,
        })
    }

    /// Runs one fuzz input: decode, send, check the answer. Returns the status, or `None`
    /// when the input does not make an HTTP request.
    pub fn run(&self, data: &[u8]) -> Option<u16> {
        let request = self.decode(data)?;
        let summary = format!(
            "{} {} (auth {:?}, content-length {:?}, {} body bytes)",
            request.method,
            String::from_utf8_lossy(&request.uri),
            request
                .authorization
                .as_ref()
                .map(|a| String::from_utf8_lossy(&a[..a.len().min(12)]).into_owned()),
            request.content_length,
            request.body.len()
        );
        let head = request.method == "HEAD";
        let (status, body) = self.send(request)?;
        assert!(
            DOCUMENTED.contains(&status.as_u16()),
            "undocumented status {status} for {summary}: {}",
            String::from_utf8_lossy(&body)
        );
        if (status.is_client_error() || status.is_server_error()) && !head {
            assert!(
                serde_json::from_slice::<envault::api::ErrorBody>(&body).is_ok(),
                "{status} for {summary} is not in the API's error format: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Some(status.as_u16())
    }

    /// Encodes a request in the format [`RouterFixture::decode`] reads (for seeds).
    pub fn encode(
        flags: u8,
        route: u8,
        seg1: &[u8],
        seg2: &[u8],
        query: &[u8],
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = vec![flags, route];
        for (i, part) in [seg1, seg2, query, body].into_iter().enumerate() {
            if i > 0 {
                out.push(0xFF);
            }
            out.extend_from_slice(part);
        }
        out
    }
}

impl Default for RouterFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// Inputs a [`RouterFuzzer`] runs on one fixture before building a fresh one.
pub const ROUTER_RESET_EVERY: usize = 500;

/// Runs router inputs on a [`RouterFixture`] rebuilt every [`ROUTER_RESET_EVERY`] inputs.
///
/// The reset bounds the state one input can depend on (a crash reproduces from at most the
/// inputs since the last reset) and keeps requests cheap: `GET /v1/audit` and
/// `/v1/audit/verify` read the whole activity log, which grows with every request, and they
/// took over half the time of a run without resets.
pub struct RouterFuzzer {
    fixture: Option<RouterFixture>,
    runs: usize,
}

impl RouterFuzzer {
    /// No fixture yet: the first input builds it.
    pub const fn new() -> Self {
        Self {
            fixture: None,
            runs: 0,
        }
    }

    /// Runs one input (see [`RouterFixture::run`]).
    pub fn run(&mut self, data: &[u8]) -> Option<u16> {
        if self.runs.is_multiple_of(ROUTER_RESET_EVERY) {
            // Drop the old vault (and remove its temp dir) before building the next one.
            self.fixture = None;
            self.fixture = Some(RouterFixture::new());
        }
        self.runs += 1;
        self.fixture.as_ref().expect("built above").run(data)
    }
}

impl Default for RouterFuzzer {
    fn default() -> Self {
        Self::new()
    }
}

/// Index of `template` in [`ROUTES`].
fn route(template: &str) -> u8 {
    ROUTES
        .iter()
        .position(|r| *r == template)
        .expect("known route") as u8
}

// ---------------------------------------------------------------------------------------------
// seeds
// ---------------------------------------------------------------------------------------------

/// Seeds of every target: (target, file name, bytes). `fuzz/seeds/` holds these, written by
/// `cargo test --test suite -- --ignored fuzz_regressions::write_seeds`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let with_mode = |mode: u8, bytes: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(bytes);
        v
    };

    // open_record
    let record = Envelope(EnvelopeKind::Record);
    let sealed = record
        .seal(record_cipher(), 7, RECORD_CONTEXT, b"hello record")
        .expect("seal");
    out.push(("open_record", "seed-record".into(), with_mode(0, &sealed)));
    let empty = record
        .seal(record_cipher(), 0, RECORD_CONTEXT, b"")
        .expect("seal");
    out.push((
        "open_record",
        "seed-record-empty".into(),
        with_mode(0, &empty),
    ));
    let ctx = context(&[b"app-wrap", &[9; 16], b"tenant"]);
    let mut with_ctx = vec![1, ctx.len() as u8];
    with_ctx.extend_from_slice(&ctx);
    with_ctx.extend_from_slice(
        &record
            .seal(record_cipher(), 1, &ctx, b"bound to a context")
            .expect("seal"),
    );
    out.push(("open_record", "seed-context".into(), with_ctx));
    let mut raw = vec![2, 12, 16, 4];
    raw.extend_from_slice(&[0u8; 12]);
    raw.extend_from_slice(&[0u8; 16]);
    raw.extend_from_slice(b"aad!ciphertext");
    out.push(("open_record", "seed-raw".into(), raw));
    out.push((
        "open_record",
        "seed-roundtrip".into(),
        vec![
            3, 1, 4, 0x10, 0, b'c', b't', b'x', b'p', b'l', b'a', b'i', b'n',
        ],
    ));

    // backup_file
    out.push((
        "backup_file",
        "seed-backup-3-records".into(),
        with_mode(
            0,
            &seed_backup_file(&[(b"a", b"1"), (b"bb", b"two"), (b"key-3", &[7u8; 40])]),
        ),
    ));
    out.push((
        "backup_file",
        "seed-backup-empty".into(),
        with_mode(0, &seed_backup_file(&[])),
    ));
    let mut records = Vec::new();
    encode_record(&mut records, b"k", b"v");
    encode_record(&mut records, b"key", b"value");
    let mut drain = vec![2, 7];
    drain.extend_from_slice(&records);
    out.push(("backup_file", "seed-drain".into(), drain));
    let mut payload = vec![3, 2];
    payload.extend_from_slice(&records);
    out.push(("backup_file", "seed-payload".into(), payload));

    // keystore_file
    let file = seed_keystore_file();
    out.push(("keystore_file", "seed-keystore".into(), with_mode(0, &file)));
    out.push((
        "keystore_file",
        "seed-keystore-temp".into(),
        with_mode(1, &file),
    ));
    let plain = seed_keystore_plain(&[(1, 1, [1; 32]), (1, 2, [2; 32]), (2, 1, [3; 32])]);
    out.push(("keystore_file", "seed-plain".into(), with_mode(2, &plain)));
    let mut recovery = vec![3, 8];
    recovery.extend_from_slice(&[0u8; 8]);
    recovery.extend_from_slice(&plain);
    out.push(("keystore_file", "seed-recovery".into(), recovery));

    // router: flags = method | auth << 3 | content-length << 6.
    const GET: u8 = 0;
    const POST: u8 = 1;
    const PUT: u8 = 2;
    const DELETE: u8 = 3;
    const OP: u8 = 1 << 3;
    const APP: u8 = 2 << 3;
    const FIXED: u8 = 0x80;
    let requests: [(&str, Vec<u8>); 16] = [
        (
            "health",
            RouterFixture::encode(GET, route("/v1/health"), b"", b"", b"", b""),
        ),
        (
            "raw-path",
            RouterFixture::encode(GET | OP, 0, b"/v1/keys?x=1", b"", b"", b""),
        ),
        (
            "list-keys",
            RouterFixture::encode(GET | OP, route("/v1/keys"), b"", b"", b"", b""),
        ),
        (
            "create-key",
            RouterFixture::encode(
                POST | OP | 1 << 6,
                route("/v1/keys"),
                b"",
                b"",
                b"",
                br#"{"name":"k2","description":"d"}"#,
            ),
        ),
        (
            "show-key",
            RouterFixture::encode(GET | OP, route("/v1/keys/{}"), b"fk", b"", b"", b""),
        ),
        (
            "wrap",
            RouterFixture::encode(
                POST | OP,
                route("/v1/keys/{}/wrap") | FIXED,
                b"",
                b"",
                b"",
                br#"{"plaintext":"aGVsbG8=","aad":["a"]}"#,
            ),
        ),
        (
            "unwrap",
            RouterFixture::encode(
                POST | OP,
                route("/v1/keys/{}/unwrap") | FIXED,
                b"",
                b"",
                b"",
                br#"{"ciphertext":"RVZXQQEAAAAB","aad":["a"]}"#,
            ),
        ),
        (
            "rotate-dry-run",
            RouterFixture::encode(
                POST | OP,
                route("/v1/keys/{}/rotate") | FIXED,
                b"",
                b"",
                b"dry_run=true",
                br#"{"retire_old":false}"#,
            ),
        ),
        (
            "delete-key-dry-run",
            RouterFixture::encode(
                DELETE | OP,
                route("/v1/keys/{}") | FIXED,
                b"",
                b"",
                b"dry_run=true&force=false",
                b"",
            ),
        ),
        (
            "create-db",
            RouterFixture::encode(
                POST | OP,
                route("/v1/databases"),
                b"",
                b"",
                b"",
                br#"{"name":"d2","key":"fk","backup_key":null}"#,
            ),
        ),
        (
            "list-records",
            RouterFixture::encode(
                GET | APP,
                route("/v1/databases/{}/records") | FIXED,
                b"",
                b"",
                b"prefix=r&after=a&limit=10",
                b"",
            ),
        ),
        (
            "put-record",
            RouterFixture::encode(
                PUT | APP | 1 << 6,
                route("/v1/databases/{}/records/{}"),
                b"fdb",
                b"new/rec\x00",
                b"",
                b"some value",
            ),
        ),
        (
            "get-record",
            RouterFixture::encode(
                GET | APP,
                route("/v1/databases/{}/records/{}") | FIXED,
                b"",
                b"",
                b"",
                b"",
            ),
        ),
        (
            "grant",
            RouterFixture::encode(
                POST | OP,
                route("/v1/authorizations"),
                b"",
                b"",
                b"",
                br#"{"source":"databases","target":"fk","roles":["Reader"]}"#,
            ),
        ),
        (
            "create-token",
            RouterFixture::encode(
                POST | OP,
                route("/v1/tokens"),
                b"",
                b"",
                b"",
                br#"{"role":"app","databases":["fdb"]}"#,
            ),
        ),
        (
            "audit",
            RouterFixture::encode(
                GET | OP,
                route("/v1/audit"),
                b"",
                b"",
                b"action=auth.denied&since=2026-01-01T00:00:00Z",
                b"",
            ),
        ),
    ];
    for (name, bytes) in requests {
        out.push(("router", format!("seed-{name}"), bytes));
    }
    out
}
