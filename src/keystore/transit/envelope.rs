//! The transit envelope: envault's header followed by transit's ciphertext body, and the
//! associated data that binds the header and the context.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::TRANSIT_ENVELOPE_VERSION;
use crate::crypto::envelope::HEADER_LEN;
use crate::crypto::{CryptoError, EnvelopeKind};

/// Shortest transit body: a 12-byte nonce and a 16-byte tag.
pub(super) const MIN_BODY: usize = 12 + 16;

/// Parses `[magic 4 | 0x10 | label u32 | body]`: (label, header, transit ciphertext text).
pub(super) fn parse_envelope(
    kind: EnvelopeKind,
    sealed: &[u8],
) -> Result<(u32, &[u8], String), CryptoError> {
    if sealed.len() < HEADER_LEN + MIN_BODY {
        return Err(CryptoError::Malformed("too short"));
    }
    if &sealed[..4] != kind.magic() {
        return Err(CryptoError::Malformed("wrong magic"));
    }
    if sealed[4] != TRANSIT_ENVELOPE_VERSION {
        return Err(CryptoError::Malformed(
            "not sealed by the transit backend (unknown version)",
        ));
    }
    let label = u32::from_be_bytes([sealed[5], sealed[6], sealed[7], sealed[8]]);
    let text = format!("vault:v{label}:{}", B64.encode(&sealed[HEADER_LEN..]));
    Ok((label, &sealed[..HEADER_LEN], text))
}

pub(super) fn header(kind: EnvelopeKind, version: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(kind.magic());
    header[4] = TRANSIT_ENVELOPE_VERSION;
    header[5..].copy_from_slice(&version.to_be_bytes());
    header
}

pub(super) fn associated_data(header: &[u8], context: &[u8]) -> String {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    B64.encode(aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_header_is_checked() {
        let mut sealed = header(EnvelopeKind::WrappedDek, 3).to_vec();
        sealed.extend_from_slice(&[7u8; MIN_BODY + 32]);
        let (label, head, text) = parse_envelope(EnvelopeKind::WrappedDek, &sealed).unwrap();
        assert_eq!((label, head.len()), (3, HEADER_LEN));
        assert_eq!(
            text,
            format!("vault:v3:{}", B64.encode([7u8; MIN_BODY + 32]))
        );
        assert!(parse_envelope(EnvelopeKind::AppWrap, &sealed).is_err());
        assert!(parse_envelope(EnvelopeKind::WrappedDek, &sealed[..HEADER_LEN + 10]).is_err());
        let mut local = sealed;
        local[4] = 1;
        assert!(parse_envelope(EnvelopeKind::WrappedDek, &local).is_err());
    }
}
