//! STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over AES-256-GCM, for backup payloads.
//!
//! The payload is cut into chunks of [`CHUNK_SIZE`] bytes (the last may be shorter, even
//! empty), each sealed with
//!
//! ```text
//! nonce = prefix (7 random bytes, per backup) || counter (u32 BE) || last flag (0x00 | 0x01)
//! ```
//!
//! and the same associated data for every chunk (the backup's immutable header). So a
//! truncated stream (no chunk flagged last), reordered chunks (counter mismatch), a chunk from
//! another backup (other DEK and prefix) or an altered header all fail to open. The counter
//! cannot wrap: sealing chunk 2^32 is refused, not repeated.

use super::aead::{NONCE_LEN, TAG_LEN};
use super::{os_random, Cipher, CryptoError};

/// Plaintext bytes per chunk: 64 KiB, as in age.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Sealed bytes per full chunk.
pub const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;
/// Length of the per-stream nonce prefix.
pub const PREFIX_LEN: usize = 7;

fn nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..PREFIX_LEN].copy_from_slice(prefix);
    nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[NONCE_LEN - 1] = u8::from(last);
    nonce
}

/// A fresh random nonce prefix for one stream.
pub fn random_prefix() -> Result<[u8; PREFIX_LEN], CryptoError> {
    let mut prefix = [0u8; PREFIX_LEN];
    os_random(&mut prefix)?;
    Ok(prefix)
}

/// Seals chunks in order. Call [`StreamSealer::seal_last`] exactly once at the end: a stream
/// without it is indistinguishable from a truncated one and will not open.
pub struct StreamSealer<'a> {
    cipher: &'a Cipher,
    prefix: [u8; PREFIX_LEN],
    counter: u32,
    aad: Vec<u8>,
    finished: bool,
}

impl<'a> StreamSealer<'a> {
    /// A sealer under `cipher` (a fresh DEK) with `prefix`, binding `aad` to every chunk.
    pub fn new(cipher: &'a Cipher, prefix: [u8; PREFIX_LEN], aad: &[u8]) -> Self {
        Self {
            cipher,
            prefix,
            counter: 0,
            aad: aad.to_vec(),
            finished: false,
        }
    }

    fn seal(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        if self.finished || chunk.len() > CHUNK_SIZE {
            return Err(CryptoError::Malformed("chunk after last or oversized"));
        }
        let nonce = nonce(&self.prefix, self.counter, last);
        let tag = self.cipher.seal_in_place(&nonce, &self.aad, chunk)?;
        chunk.extend_from_slice(&tag);
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::TooLong)?;
        self.finished = last;
        Ok(())
    }

    /// Seals a full chunk ([`CHUNK_SIZE`] bytes) in place, appending its tag.
    pub fn seal_next(&mut self, chunk: &mut Vec<u8>) -> Result<(), CryptoError> {
        if chunk.len() != CHUNK_SIZE {
            return Err(CryptoError::Malformed("non-final chunk must be full"));
        }
        self.seal(chunk, false)
    }

    /// Seals the final chunk (0..=[`CHUNK_SIZE`] bytes) in place, appending its tag.
    pub fn seal_last(&mut self, chunk: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.seal(chunk, true)
    }
}

/// Opens chunks in order; knows when the stream legitimately ended.
pub struct StreamOpener<'a> {
    cipher: &'a Cipher,
    prefix: [u8; PREFIX_LEN],
    counter: u32,
    aad: Vec<u8>,
    finished: bool,
}

impl<'a> StreamOpener<'a> {
    /// An opener matching [`StreamSealer::new`].
    pub fn new(cipher: &'a Cipher, prefix: [u8; PREFIX_LEN], aad: &[u8]) -> Self {
        Self {
            cipher,
            prefix,
            counter: 0,
            aad: aad.to_vec(),
            finished: false,
        }
    }

    /// Opens the next sealed chunk in place (tag stripped). `at_end` says whether the input
    /// has no bytes after this chunk: only then may it be the last chunk, and then it must be.
    pub fn open_next(&mut self, sealed: &mut Vec<u8>, at_end: bool) -> Result<(), CryptoError> {
        if self.finished {
            return Err(CryptoError::Malformed("data after the last chunk"));
        }
        if sealed.len() < TAG_LEN || sealed.len() > SEALED_CHUNK_SIZE {
            return Err(CryptoError::Malformed("chunk length"));
        }
        if !at_end && sealed.len() != SEALED_CHUNK_SIZE {
            return Err(CryptoError::Malformed("short chunk before the end"));
        }
        let body_len = sealed.len() - TAG_LEN;
        let (body, tag) = sealed.split_at_mut(body_len);
        let nonce = nonce(&self.prefix, self.counter, at_end);
        self.cipher.open_in_place(&nonce, &self.aad, body, tag)?;
        sealed.truncate(body_len);
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::TooLong)?;
        self.finished = at_end;
        Ok(())
    }

    /// Whether the last chunk has been opened.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn seal_stream(cipher: &Cipher, prefix: [u8; 7], data: &[u8]) -> Vec<Vec<u8>> {
        let mut sealer = StreamSealer::new(cipher, prefix, b"hdr");
        let mut out = Vec::new();
        let mut chunks = data.chunks(CHUNK_SIZE).peekable();
        if data.len().is_multiple_of(CHUNK_SIZE) {
            for c in chunks {
                let mut c = c.to_vec();
                sealer.seal_next(&mut c).unwrap();
                out.push(c);
            }
            let mut last = Vec::new();
            sealer.seal_last(&mut last).unwrap();
            out.push(last);
            return out;
        }
        while let Some(c) = chunks.next() {
            let mut c = c.to_vec();
            if chunks.peek().is_some() {
                sealer.seal_next(&mut c).unwrap();
            } else {
                sealer.seal_last(&mut c).unwrap();
            }
            out.push(c);
        }
        out
    }

    fn open_stream(
        cipher: &Cipher,
        prefix: [u8; 7],
        aad: &[u8],
        chunks: &[Vec<u8>],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut opener = StreamOpener::new(cipher, prefix, aad);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut c = c.clone();
            opener.open_next(&mut c, i + 1 == chunks.len())?;
            out.extend_from_slice(&c);
        }
        if !opener.is_finished() {
            return Err(CryptoError::Malformed("truncated"));
        }
        Ok(out)
    }

    #[test]
    fn round_trip_and_attacks() {
        let cipher = Cipher::new(&SecretKey::generate().unwrap());
        let prefix = random_prefix().unwrap();
        let data: Vec<u8> = (0..CHUNK_SIZE * 3 + 100).map(|i| i as u8).collect();
        let chunks = seal_stream(&cipher, prefix, &data);
        assert_eq!(chunks.len(), 4);
        assert_eq!(open_stream(&cipher, prefix, b"hdr", &chunks).unwrap(), data);
        // Truncation at a chunk boundary: the new final chunk was not sealed as last.
        assert!(open_stream(&cipher, prefix, b"hdr", &chunks[..3]).is_err());
        // Reordering.
        let mut swapped = chunks.clone();
        swapped.swap(0, 1);
        assert!(open_stream(&cipher, prefix, b"hdr", &swapped).is_err());
        // Another header.
        assert!(open_stream(&cipher, prefix, b"HDR", &chunks).is_err());
        // Splicing a chunk from another stream under another prefix.
        let other = seal_stream(&cipher, random_prefix().unwrap(), &data);
        let mut spliced = chunks.clone();
        spliced[1] = other[1].clone();
        assert!(open_stream(&cipher, prefix, b"hdr", &spliced).is_err());
        // Exact multiple of the chunk size ends with an empty last chunk.
        let exact = seal_stream(&cipher, prefix, &data[..CHUNK_SIZE * 2]);
        assert_eq!(exact.len(), 3);
        assert_eq!(
            open_stream(&cipher, prefix, b"hdr", &exact).unwrap(),
            &data[..CHUNK_SIZE * 2]
        );
        assert!(open_stream(&cipher, prefix, b"hdr", &exact[..2]).is_err());
    }
}
