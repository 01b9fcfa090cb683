//! Streaming backup payloads: memory stays bounded by one chunk plus one record, whatever the
//! backup's size.

use std::io::{BufRead, BufReader, Read, Write};

use super::format::{drain_records, encode_record, BackupFormatError, BackupFront};
use crate::crypto::stream::{StreamOpener, StreamSealer, CHUNK_SIZE, SEALED_CHUNK_SIZE};
use crate::crypto::Cipher;

/// Seals records into STREAM chunks and writes them out.
pub struct PayloadWriter<'a, W: Write> {
    out: W,
    sealer: StreamSealer<'a>,
    buffer: Vec<u8>,
    records: u64,
}

impl<'a, W: Write> PayloadWriter<'a, W> {
    /// A writer sealing under `cipher` with `prefix`, binding `aad`.
    pub fn new(out: W, cipher: &'a Cipher, prefix: [u8; 7], aad: &[u8]) -> Self {
        Self {
            out,
            sealer: StreamSealer::new(cipher, prefix, aad),
            buffer: Vec::with_capacity(2 * CHUNK_SIZE),
            records: 0,
        }
    }

    /// Adds one record.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupFormatError> {
        encode_record(&mut self.buffer, key, value);
        self.records += 1;
        // Keep at least one byte back so the final chunk is sealed by `finish` as last.
        while self.buffer.len() > CHUNK_SIZE {
            let rest = self.buffer.split_off(CHUNK_SIZE);
            let mut chunk = std::mem::replace(&mut self.buffer, rest);
            self.sealer
                .seal_next(&mut chunk)
                .map_err(|_| BackupFormatError::Invalid("cannot seal chunk"))?;
            self.out.write_all(&chunk)?;
        }
        Ok(())
    }

    /// Seals the last chunk; returns the output and the number of records written.
    pub fn finish(mut self) -> Result<(W, u64), BackupFormatError> {
        let mut last = std::mem::take(&mut self.buffer);
        self.sealer
            .seal_last(&mut last)
            .map_err(|_| BackupFormatError::Invalid("cannot seal chunk"))?;
        self.out.write_all(&last)?;
        self.out.flush()?;
        Ok((self.out, self.records))
    }
}

/// Opens every chunk of a payload (positioned at its start) and hands each record to `sink`.
/// Fails unless the stream ends with its last chunk and holds exactly the header's record count.
pub fn read_payload(
    input: impl Read,
    cipher: &Cipher,
    front: &BackupFront,
    mut sink: impl FnMut(&[u8], &[u8]) -> Result<(), BackupFormatError>,
) -> Result<u64, BackupFormatError> {
    let mut input = BufReader::with_capacity(SEALED_CHUNK_SIZE, input);
    let mut opener = StreamOpener::new(cipher, front.prefix()?, &front.aad());
    let mut pending = Vec::with_capacity(2 * CHUNK_SIZE);
    let mut records = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(SEALED_CHUNK_SIZE);
        (&mut input)
            .take(SEALED_CHUNK_SIZE as u64)
            .read_to_end(&mut chunk)?;
        let at_end = input.fill_buf()?.is_empty();
        if chunk.is_empty() {
            break;
        }
        opener
            .open_next(&mut chunk, at_end)
            .map_err(|_| BackupFormatError::Payload)?;
        pending.extend_from_slice(&chunk);
        drain_records(&mut pending, |k, v| {
            records += 1;
            sink(k, v)
        })?;
        if at_end {
            break;
        }
    }
    if !opener.is_finished() || !pending.is_empty() || records != front.header.record_count {
        return Err(BackupFormatError::Payload);
    }
    Ok(records)
}
