//! The sealed envelope: one byte layout for every AES-GCM ciphertext envault stores or hands out.
//!
//! ```text
//!  0      4     5          9                 21                      n-16     n
//!  +------+-----+----------+-----------------+-----------------------+--------+
//!  |magic |ver=1| label u32| nonce (12 bytes)| ciphertext            | tag 16 |
//!  +------+-----+----------+-----------------+-----------------------+--------+
//!  AAD = header (bytes 0..9) || context
//! ```
//!
//! The magic names the kind (record, wrapped DEK, app-held ciphertext, keystore file) and so
//! separates domains: an envelope of one kind never opens as another. `label` is the DEK
//! generation for records and the root-key version for wrapped material; it sits in the
//! authenticated header, so it cannot be altered. `context` is bound but not stored: it is what
//! ties a ciphertext to its place (database id, record key, root key id, caller AAD), so an
//! envelope moved elsewhere fails to open.

use super::aead::{random_nonce, NONCE_LEN, TAG_LEN};
use super::{Cipher, CryptoError};

/// Current envelope format version. An unknown version fails; there is no fallback.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes before the nonce: magic, version, label.
pub const HEADER_LEN: usize = 9;
/// Total bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// What an envelope holds; each kind has its own magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A database record sealed by a DEK; label = DEK generation.
    Record,
    /// A DEK wrapped by a root key version; label = root key version.
    WrappedDek,
    /// Material wrapped through the wrap API for an application; label = root key version.
    AppWrap,
    /// The keystore file sealed by the master key; label unused (0).
    Keystore,
    /// A backup's DEK wrapped by the backup key; label = root key version.
    BackupDek,
    /// Plaintext encrypted through the Vault-transit-compatible API; label = root key version.
    /// The header is not sent on the wire (`vault:v<label>:` stands for it, see
    /// `server::compat::transit`), so it is rebuilt from the version before opening.
    Transit,
}

impl EnvelopeKind {
    /// The four magic bytes that open every envelope of this kind.
    pub const fn magic(self) -> &'static [u8; 4] {
        match self {
            EnvelopeKind::Record => b"EVRC",
            EnvelopeKind::WrappedDek => b"EVWD",
            EnvelopeKind::AppWrap => b"EVWA",
            EnvelopeKind::Keystore => b"EVKS",
            EnvelopeKind::BackupDek => b"EVBD",
            EnvelopeKind::Transit => b"EVTV",
        }
    }
}

/// Sealing and opening of envelopes of one kind.
#[derive(Debug, Clone, Copy)]
pub struct Envelope(pub EnvelopeKind);

impl Envelope {
    /// Seals `plaintext` under `cipher` with a fresh random nonce.
    pub fn seal(
        self,
        cipher: &Cipher,
        label: u32,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(self.0.magic());
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&label.to_be_bytes());
        let nonce = random_nonce()?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut stack = [0u8; AAD_ON_STACK];
        let (header, body) = out.split_at_mut(HEADER_LEN + NONCE_LEN);
        let aad = Aad::new(&mut stack, &header[..HEADER_LEN], context);
        let tag = cipher.seal_in_place(&nonce, aad.bytes(&stack), body)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Reads the label of a well-formed envelope without opening it, so the caller can pick the
    /// key (DEK generation or root key version) to open it with. Not authenticated by itself.
    pub fn label(self, sealed: &[u8]) -> Result<u32, CryptoError> {
        self.check_header(sealed)?;
        Ok(u32::from_be_bytes([
            sealed[5], sealed[6], sealed[7], sealed[8],
        ]))
    }

    /// Opens `sealed` in place and returns (label, plaintext); the buffer is reused for the
    /// plaintext. Callers holding secrets wrap the result in `Zeroizing`.
    pub fn open(
        self,
        cipher: &Cipher,
        context: &[u8],
        mut sealed: Vec<u8>,
    ) -> Result<(u32, Vec<u8>), CryptoError> {
        let label = self.label(&sealed)?;
        let mut stack = [0u8; AAD_ON_STACK];
        let aad = Aad::new(&mut stack, &sealed[..HEADER_LEN], context);
        let aad = aad.bytes(&stack);
        let tag_start = sealed.len() - TAG_LEN;
        let (head, tag) = sealed.split_at_mut(tag_start);
        let (header_and_nonce, body) = head.split_at_mut(HEADER_LEN + NONCE_LEN);
        let nonce = &header_and_nonce[HEADER_LEN..];
        if let Err(err) = cipher.open_in_place(nonce, aad, body, tag) {
            // The buffer now holds unauthenticated keystream-XORed bytes: never return them.
            zeroize::Zeroize::zeroize(&mut sealed);
            return Err(err);
        }
        sealed.truncate(tag_start);
        sealed.drain(..HEADER_LEN + NONCE_LEN);
        Ok((label, sealed))
    }

    fn check_header(self, sealed: &[u8]) -> Result<(), CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::Malformed("too short"));
        }
        if &sealed[..4] != self.0.magic() {
            return Err(CryptoError::Malformed("wrong magic"));
        }
        if sealed[4] != ENVELOPE_VERSION {
            return Err(CryptoError::Malformed("unknown version"));
        }
        Ok(())
    }
}

/// The header an envelope of `kind` with `label` starts with (what `seal` writes first), for
/// wire formats that leave it implicit.
pub fn header(kind: EnvelopeKind, label: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..4].copy_from_slice(kind.magic());
    out[4] = ENVELOPE_VERSION;
    out[5..].copy_from_slice(&label.to_be_bytes());
    out
}

/// Largest header + context assembled on the stack: a record context with a 1 KiB key fits,
/// so record seal and open allocate nothing for their associated data.
const AAD_ON_STACK: usize = 1152;

/// The associated data, header || context: in the caller's stack buffer when it fits, else
/// on the heap.
enum Aad {
    Stack(usize),
    Heap(Vec<u8>),
}

impl Aad {
    fn new(stack: &mut [u8; AAD_ON_STACK], header: &[u8], context: &[u8]) -> Self {
        let len = header.len() + context.len();
        if len <= AAD_ON_STACK {
            stack[..header.len()].copy_from_slice(header);
            stack[header.len()..len].copy_from_slice(context);
            Aad::Stack(len)
        } else {
            let mut heap = Vec::with_capacity(len);
            heap.extend_from_slice(header);
            heap.extend_from_slice(context);
            Aad::Heap(heap)
        }
    }

    fn bytes<'a>(&'a self, stack: &'a [u8; AAD_ON_STACK]) -> &'a [u8] {
        match self {
            Aad::Stack(len) => &stack[..*len],
            Aad::Heap(heap) => heap,
        }
    }
}

/// Builds an unambiguous context from parts: each part is length-prefixed (u32 BE), so
/// `("ab","c")` and `("a","bc")` never collide.
pub fn context(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn cipher() -> Cipher {
        Cipher::new(&SecretKey::generate().unwrap())
    }

    #[test]
    fn round_trip_and_label() {
        let c = cipher();
        let env = Envelope(EnvelopeKind::Record);
        let sealed = env.seal(&c, 7, b"ctx", b"hello").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 5);
        assert_eq!(env.label(&sealed).unwrap(), 7);
        assert_eq!(
            env.open(&c, b"ctx", sealed).unwrap(),
            (7, b"hello".to_vec())
        );
    }

    #[test]
    fn every_flipped_bit_fails() {
        let c = cipher();
        let env = Envelope(EnvelopeKind::WrappedDek);
        let sealed = env.seal(&c, 1, b"ctx", b"0123456789").unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(env.open(&c, b"ctx", bad).is_err(), "bit {bit} flip opened");
        }
    }

    #[test]
    fn kinds_and_contexts_are_separated() {
        let c = cipher();
        let sealed = Envelope(EnvelopeKind::Record)
            .seal(&c, 1, b"a", b"x")
            .unwrap();
        assert!(Envelope(EnvelopeKind::AppWrap)
            .open(&c, b"a", sealed.clone())
            .is_err());
        assert!(Envelope(EnvelopeKind::Record)
            .open(&c, b"b", sealed.clone())
            .is_err());
        assert!(Envelope(EnvelopeKind::Record)
            .open(&cipher(), b"a", sealed)
            .is_err());
    }

    #[test]
    fn truncated_inputs_are_malformed_not_panics() {
        let env = Envelope(EnvelopeKind::Record);
        for len in 0..OVERHEAD {
            assert!(env.open(&cipher(), b"", vec![0; len]).is_err());
        }
    }

    #[test]
    fn header_matches_what_seal_writes() {
        let sealed = Envelope(EnvelopeKind::Transit)
            .seal(&cipher(), 9, b"", b"x")
            .unwrap();
        assert_eq!(sealed[..HEADER_LEN], header(EnvelopeKind::Transit, 9));
    }

    #[test]
    fn context_is_unambiguous() {
        assert_ne!(context(&[b"ab", b"c"]), context(&[b"a", b"bc"]));
    }
}
