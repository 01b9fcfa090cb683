//! Property tests of the envelope format and its bindings.
//!
//! What must hold for every input: a sealed envelope opens to what was sealed; any single flipped
//! bit anywhere in it is refused; and an envelope opens only in the place it was sealed for
//! (database, record key, DEK generation, root key, caller AAD, envelope kind, key). Case counts
//! are modest so the suite runs in seconds in debug builds as well as release.

use envault::crypto::aead::{NONCE_LEN, TAG_LEN};
use envault::crypto::envelope::{HEADER_LEN, OVERHEAD};
use envault::crypto::{bindings, Cipher, CryptoError, Envelope, EnvelopeKind, SecretKey};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

const KINDS: [EnvelopeKind; 6] = [
    EnvelopeKind::Record,
    EnvelopeKind::WrappedDek,
    EnvelopeKind::AppWrap,
    EnvelopeKind::Keystore,
    EnvelopeKind::BackupDek,
    EnvelopeKind::Transit,
];

/// Stops compiling when a kind is added, until it is listed in `KINDS` too.
#[allow(dead_code)]
fn kinds_are_listed(kind: EnvelopeKind) {
    match kind {
        EnvelopeKind::Record
        | EnvelopeKind::WrappedDek
        | EnvelopeKind::AppWrap
        | EnvelopeKind::Keystore
        | EnvelopeKind::BackupDek
        | EnvelopeKind::Transit => {}
    }
}

#[test]
fn every_kind_has_its_own_magic() {
    for (i, a) in KINDS.iter().enumerate() {
        for b in &KINDS[i + 1..] {
            assert_ne!(a.magic(), b.magic(), "{a:?} and {b:?} share a magic");
        }
    }
}

fn kind() -> impl Strategy<Value = EnvelopeKind> {
    prop::sample::select(KINDS.to_vec())
}

/// Keys come from proptest (not the OS RNG) so that failures shrink and replay.
fn cipher(key: &[u8; 32]) -> Cipher {
    Cipher::new(&SecretKey::from_slice(key).expect("32 bytes"))
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// What every open of a misplaced envelope returns: one opaque error, whatever was wrong.
fn refused() -> Result<(u32, Vec<u8>), CryptoError> {
    Err(CryptoError::Open)
}

/// Overwrites the label (bytes 5..9 of the header) without resealing.
fn relabel(sealed: &[u8], label: u32) -> Vec<u8> {
    let mut out = sealed.to_vec();
    out[5..HEADER_LEN].copy_from_slice(&label.to_be_bytes());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn open_inverts_seal(
        kind in kind(),
        key in any::<[u8; 32]>(),
        label in any::<u32>(),
        context in bytes(256),
        plaintext in bytes(4096),
    ) {
        let cipher = cipher(&key);
        let env = Envelope(kind);
        let sealed = env.seal(&cipher, label, &context, &plaintext).unwrap();
        prop_assert_eq!(sealed.len(), OVERHEAD + plaintext.len());
        prop_assert_eq!(&sealed[..4], kind.magic());
        prop_assert_eq!(env.label(&sealed), Ok(label));
        prop_assert_eq!(env.open(&cipher, &context, sealed), Ok((label, plaintext)));
    }

    /// `region` picks header, nonce, ciphertext or tag so that each is hit about equally often,
    /// however long the plaintext; `at` picks the bit within it.
    #[test]
    fn any_flipped_bit_is_refused(
        kind in kind(),
        key in any::<[u8; 32]>(),
        label in any::<u32>(),
        context in bytes(64),
        plaintext in vec(any::<u8>(), 1..=512),
        region in 0..4usize,
        at in any::<Index>(),
    ) {
        let cipher = cipher(&key);
        let sealed = Envelope(kind).seal(&cipher, label, &context, &plaintext).unwrap();
        let body = HEADER_LEN + NONCE_LEN;
        let tag = sealed.len() - TAG_LEN;
        let range = [0..HEADER_LEN, HEADER_LEN..body, body..tag, tag..sealed.len()][region].clone();
        let bit = range.start * 8 + at.index(range.len() * 8);
        let mut bad = sealed;
        bad[bit / 8] ^= 1 << (bit % 8);

        let expected = match bit / 8 {
            0..=3 => CryptoError::Malformed("wrong magic"),
            4 => CryptoError::Malformed("unknown version"),
            // Label, nonce, ciphertext and tag are all authenticated: one opaque error.
            _ => CryptoError::Open,
        };
        prop_assert_eq!(Envelope(kind).open(&cipher, &context, bad), Err(expected));
    }

    #[test]
    fn a_kind_never_opens_as_another(
        kinds in (0..KINDS.len(), 1..KINDS.len()),
        key in any::<[u8; 32]>(),
        context in bytes(64),
        plaintext in bytes(256),
    ) {
        let (sealed_as, opened_as) = (KINDS[kinds.0], KINDS[(kinds.0 + kinds.1) % KINDS.len()]);
        let cipher = cipher(&key);
        let sealed = Envelope(sealed_as).seal(&cipher, 1, &context, &plaintext).unwrap();
        prop_assert_eq!(
            Envelope(opened_as).open(&cipher, &context, sealed),
            Err(CryptoError::Malformed("wrong magic"))
        );
    }

    #[test]
    fn record_opens_only_at_its_place_and_generation(
        deks in any::<([u8; 32], [u8; 32])>(),
        dbs in any::<([u8; 16], [u8; 16])>(),
        record_keys in (bytes(64), bytes(64)),
        generations in any::<(u32, u32)>(),
        value in bytes(1024),
    ) {
        let ((dek, other_dek), (db, other_db)) = (deks, dbs);
        let ((record_key, other_record_key), (generation, other_generation)) =
            (record_keys, generations);
        prop_assume!(dek != other_dek && db != other_db);
        prop_assume!(record_key != other_record_key && generation != other_generation);

        let env = Envelope(EnvelopeKind::Record);
        let cipher = cipher(&dek);
        let context = bindings::record_context(&db, &record_key);
        let sealed = env.seal(&cipher, generation, &context, &value).unwrap();

        let other_key = bindings::record_context(&db, &other_record_key);
        prop_assert_eq!(env.open(&cipher, &other_key, sealed.clone()), refused());
        let other_database = bindings::record_context(&other_db, &record_key);
        prop_assert_eq!(env.open(&cipher, &other_database, sealed.clone()), refused());
        let relabelled = relabel(&sealed, other_generation);
        prop_assert_eq!(env.label(&relabelled), Ok(other_generation));
        prop_assert_eq!(env.open(&cipher, &context, relabelled), refused());
        prop_assert_eq!(env.open(&self::cipher(&other_dek), &context, sealed.clone()), refused());
        prop_assert_eq!(env.open(&cipher, &context, sealed), Ok((generation, value)));
    }

    #[test]
    fn wrapped_dek_opens_only_for_its_generation_database_and_root_key(
        root_keys in any::<([u8; 32], [u8; 32])>(),
        dek in any::<[u8; 32]>(),
        dbs in any::<([u8; 16], [u8; 16])>(),
        root_key_ids in any::<([u8; 16], [u8; 16])>(),
        generations in any::<(u32, u32)>(),
        versions in any::<(u32, u32)>(),
    ) {
        let ((root, other_root), (db, other_db)) = (root_keys, dbs);
        let ((root_key_id, other_root_key_id), (generation, other_generation)) =
            (root_key_ids, generations);
        let (version, other_version) = versions;
        prop_assume!(root != other_root && db != other_db && root_key_id != other_root_key_id);
        prop_assume!(generation != other_generation && version != other_version);

        let env = Envelope(EnvelopeKind::WrappedDek);
        let cipher = cipher(&root);
        let context = bindings::dek_context(&db, generation, &root_key_id);
        let wrapped = env.seal(&cipher, version, &context, &dek).unwrap();

        for other in [
            bindings::dek_context(&db, other_generation, &root_key_id),
            bindings::dek_context(&other_db, generation, &root_key_id),
            bindings::dek_context(&db, generation, &other_root_key_id),
        ] {
            prop_assert_eq!(env.open(&cipher, &other, wrapped.clone()), refused());
        }
        prop_assert_eq!(env.open(&cipher, &context, relabel(&wrapped, other_version)), refused());
        prop_assert_eq!(env.open(&self::cipher(&other_root), &context, wrapped.clone()), refused());

        let (label, unwrapped) = env.open(&cipher, &context, wrapped).unwrap();
        prop_assert_eq!(label, version);
        let unwrapped = SecretKey::from_slice(&unwrapped).unwrap();
        prop_assert_eq!(unwrapped.expose_secret(), &dek);
    }

    /// Different AAD lists must give different contexts, including lists with the same
    /// concatenation (`["ab", "c"]` vs `["a", "bc"]`): `resplit` cuts the same bytes differently.
    #[test]
    fn app_wrap_opens_only_with_its_aad_list(
        key in any::<[u8; 32]>(),
        root_key_ids in any::<([u8; 16], [u8; 16])>(),
        aad in vec("[a-z]{0,6}", 0..5),
        other_aad in vec("[a-z]{0,6}", 0..5),
        resplit in any::<Index>(),
        secret in bytes(64),
    ) {
        let (root_key_id, other_root_key_id) = root_key_ids;
        prop_assume!(root_key_id != other_root_key_id);
        let joined = aad.concat();
        let cut = resplit.index(joined.len() + 1);
        let resplit_aad = vec![joined[..cut].to_owned(), joined[cut..].to_owned()];

        let env = Envelope(EnvelopeKind::AppWrap);
        let cipher = cipher(&key);
        let context = bindings::app_wrap_context(&root_key_id, &aad);
        let sealed = env.seal(&cipher, 1, &context, &secret).unwrap();

        for other in [other_aad, resplit_aad] {
            if other == aad {
                continue;
            }
            let other_context = bindings::app_wrap_context(&root_key_id, &other);
            prop_assert_ne!(&other_context, &context);
            prop_assert_eq!(env.open(&cipher, &other_context, sealed.clone()), refused());
        }
        let other_root = bindings::app_wrap_context(&other_root_key_id, &aad);
        prop_assert_eq!(env.open(&cipher, &other_root, sealed.clone()), refused());
        prop_assert_eq!(env.open(&cipher, &context, sealed), Ok((1, secret)));
    }

    /// Attacker-chosen nonce and tag lengths are refused before the cipher sees them.
    #[test]
    fn raw_open_refuses_wrong_nonce_and_tag_lengths(
        key in any::<[u8; 32]>(),
        nonce in bytes(32),
        tag in bytes(32),
        body in bytes(64),
    ) {
        let cipher = cipher(&key);
        let mut buffer = body;
        let result = cipher.open_in_place(&nonce, b"", &mut buffer, &tag);
        if nonce.len() != NONCE_LEN {
            prop_assert_eq!(result, Err(CryptoError::NonceLength));
        } else {
            // Right-sized random tags fail too, except with probability 2^-128.
            prop_assert_eq!(result, Err(CryptoError::Open));
        }
    }

    #[test]
    fn truncated_envelopes_are_malformed(
        kind in kind(),
        key in any::<[u8; 32]>(),
        plaintext in bytes(64),
        keep in any::<Index>(),
    ) {
        let cipher = cipher(&key);
        let sealed = Envelope(kind).seal(&cipher, 0, b"", &plaintext).unwrap();
        let cut = sealed[..keep.index(OVERHEAD)].to_vec();
        prop_assert_eq!(
            Envelope(kind).open(&cipher, b"", cut),
            Err(CryptoError::Malformed("too short"))
        );
    }
}
