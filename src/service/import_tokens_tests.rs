//! Import tokens without the daemon: each rejection cause, uses and expiry. One RSA-4096 key
//! pair per test (generation is the slow part).

use super::*;
use rsa::pkcs8::DecodePublicKey as _;

/// A client's side of a secure import: wraps `material` and seals the token's nonce.
fn seal(info: &ImportTokenInfo, material: &[u8], nonce: &[u8]) -> crate::api::SecureImportFields {
    let der = B64.decode(&info.public_key).unwrap();
    let public = rsa::PublicKey::from_public_key_der(&der).unwrap();
    let wrapped = public.oaep_encrypt::<rsa::sha2::Sha256>(material).unwrap();
    let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
    let key = if material.len() == 32 {
        SecretKey::from_slice(material).unwrap()
    } else {
        key
    };
    let iv = [3u8; IV_LEN];
    let mut sealed = nonce.to_vec();
    let tag = Cipher::new(&key)
        .seal_in_place(&iv, &[], &mut sealed)
        .unwrap();
    sealed.extend_from_slice(&tag);
    crate::api::SecureImportFields {
        import_token: info.id.clone(),
        encrypted_payload: B64.encode(wrapped),
        encrypted_nonce: B64.encode(sealed),
        iv: B64.encode(iv),
    }
}

fn token(tokens: &ImportTokens, ttl: Duration, uses: u32) -> ImportTokenInfo {
    let key = NewImportKey::generate().unwrap();
    tokens
        .insert(key, ttl, uses, |id| format!("crn:{id}"))
        .unwrap()
}

fn material() -> Vec<u8> {
    (1u8..=32).collect()
}

fn attempt(
    tokens: &ImportTokens,
    fields: &crate::api::SecureImportFields,
) -> Result<SecretKey, ImportError> {
    let sealed = SealedImport::decode(fields).unwrap();
    let taken = tokens.take_use(&sealed.token)?;
    sealed.open(&taken)
}

fn cause(result: Result<SecretKey, ImportError>) -> RejectCause {
    match result {
        Err(ImportError::Rejected(cause)) => cause,
        Err(other) => panic!("expected a rejection, got {other}"),
        Ok(_) => panic!("expected a rejection, got material"),
    }
}

#[test]
fn every_rejection_takes_a_use_and_answers_alike() {
    let tokens = ImportTokens::default();
    let info = token(&tokens, Duration::from_secs(60), 6);
    let nonce = B64.decode(&info.nonce).unwrap();
    assert_eq!(nonce.len(), IMPORT_NONCE_LEN);

    // A ciphertext that is not RSA-OAEP under this key.
    let mut garbage = seal(&info, &material(), &nonce);
    garbage.encrypted_payload = B64.encode([0x55u8; RSA_CIPHERTEXT_LEN]);
    assert_eq!(cause(attempt(&tokens, &garbage)), RejectCause::Ciphertext);
    // 31 bytes of material.
    let short = seal(&info, &material()[..31], &nonce);
    assert_eq!(cause(attempt(&tokens, &short)), RejectCause::MaterialLength);
    // The nonce sealed under other material.
    let mut other_key = seal(&info, &material(), &nonce);
    other_key.encrypted_nonce = seal(&info, &[9u8; 32], &nonce).encrypted_nonce;
    assert_eq!(
        cause(attempt(&tokens, &other_key)),
        RejectCause::NonceMismatch
    );
    // Another nonce than the token's.
    let wrong_nonce = seal(&info, &material(), &[0u8; IMPORT_NONCE_LEN]);
    assert_eq!(
        cause(attempt(&tokens, &wrong_nonce)),
        RejectCause::NonceMismatch
    );
    // One repeated byte.
    let weak = seal(&info, &[0x42u8; 32], &nonce);
    assert_eq!(cause(attempt(&tokens, &weak)), RejectCause::WeakMaterial);

    // The same answer for all of them.
    let codes: std::collections::HashSet<(&str, String)> = [
        RejectCause::Ciphertext,
        RejectCause::MaterialLength,
        RejectCause::NonceMismatch,
        RejectCause::WeakMaterial,
    ]
    .into_iter()
    .map(|c| {
        let err = ImportError::Rejected(c);
        (err.code(), err.to_string())
    })
    .collect();
    assert_eq!(codes.len(), 1);

    // Five uses taken; the sixth succeeds and uses the token up.
    assert_eq!(tokens.show(&info.id).unwrap().remaining_uses, 1);
    let good = seal(&info, &material(), &nonce);
    let key = attempt(&tokens, &good).unwrap();
    assert_eq!(key.expose_secret().as_slice(), material().as_slice());
    assert_eq!(
        tokens.live_count(),
        0,
        "the private key is gone with the last use"
    );
    assert!(matches!(
        attempt(&tokens, &good),
        Err(ImportError::UsedUp(_))
    ));
    assert!(matches!(tokens.show(&info.id), Err(ImportError::UsedUp(_))));
    assert!(matches!(
        tokens.take_use("no-such-token"),
        Err(ImportError::UnknownToken(_))
    ));
}

#[test]
fn expired_tokens_are_destroyed_by_the_sweep() {
    let tokens = ImportTokens::default();
    let info = token(&tokens, Duration::from_millis(50), 1);
    assert_eq!(tokens.live_count(), 1);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(tokens.sweep(), 1);
    assert_eq!(tokens.live_count(), 0);
    assert!(matches!(
        tokens.take_use(&info.id),
        Err(ImportError::Expired(_))
    ));
}

#[test]
fn requests_are_bounded_by_the_settings() {
    let tokens = ImportTokens::default();
    assert_eq!(
        tokens.resolve(None, None).unwrap(),
        (Duration::from_secs(600), 1)
    );
    assert_eq!(
        tokens.resolve(Some("2h"), Some(10)).unwrap(),
        (Duration::from_secs(7200), 10)
    );
    for (ttl, uses) in [
        (Some("2d"), None),
        (Some("0s"), None),
        (Some("soon"), None),
        (None, Some(0)),
        (None, Some(11)),
    ] {
        assert!(matches!(
            tokens.resolve(ttl, uses),
            Err(ServiceError::BadRequest(_))
        ));
    }
}

#[test]
fn malformed_fields_are_refused_before_a_use() {
    let fields = crate::api::SecureImportFields {
        import_token: "t".into(),
        encrypted_payload: B64.encode([1u8; 10]),
        encrypted_nonce: B64.encode([1u8; SEALED_NONCE_LEN]),
        iv: B64.encode([1u8; IV_LEN]),
    };
    assert!(matches!(
        SealedImport::decode(&fields),
        Err(ServiceError::BadRequest(_))
    ));
    let bad_iv = crate::api::SecureImportFields {
        encrypted_payload: B64.encode([1u8; RSA_CIPHERTEXT_LEN]),
        iv: "not base64!".into(),
        ..fields
    };
    assert!(matches!(
        SealedImport::decode(&bad_iv),
        Err(ServiceError::BadRequest(_))
    ));
}
