//! Blocking `Write`/`Read` adapters over object_store's async multipart upload and streaming
//! download, so the backup writer and reader (synchronous, run under `block_in_place`) stream
//! to and from a bucket with bounded memory:
//! - upload: the writer hands 1 MiB buffers through a channel of [`UPLOAD_QUEUE`] to a task
//!   that cuts [`PART_SIZE`] parts with at most [`PARTS_IN_FLIGHT`] being sent at once;
//! - download: a task pulls the response body into a channel of [`DOWNLOAD_QUEUE`] pieces
//!   that the reader drains, so decryption overlaps the transfer.

use std::io::{Read, Write};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{MultipartUpload, WriteMultipart};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ObjectWriter, TargetError};

/// Multipart part size (S3's minimum for all parts but the last is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading concurrently.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Bytes the writer buffers before handing them to the upload task.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Buffers queued between writer and upload task.
const UPLOAD_QUEUE: usize = 4;
/// Body pieces queued between the download task and the reader. A piece is whatever hyper
/// read in one go, up to its read buffer's cap (about 400 KiB), and it keeps that buffer
/// alive, so the queue stays short: 8 pieces are at most ~3.2 MiB, and the reader (decrypt,
/// then write the store) is the slower side anyway. With 64 a 1 GiB restore peaked 93 MiB
/// over idle.
const DOWNLOAD_QUEUE: usize = 8;

enum Upload {
    Data(Bytes),
    Finish,
}

/// A blocking writer feeding a multipart upload. The object appears only when `finish`
/// completes the upload; an error, `abort` or drop aborts it.
pub struct MultipartWriter {
    handle: Handle,
    buffer: Vec<u8>,
    sender: Option<mpsc::Sender<Upload>>,
    task: Option<JoinHandle<Result<u64, TargetError>>>,
    location: String,
}

impl MultipartWriter {
    /// Starts the upload task for `upload` (already created) of the object at `location`.
    pub fn start(handle: Handle, upload: Box<dyn MultipartUpload>, location: String) -> Self {
        let (sender, receiver) = mpsc::channel(UPLOAD_QUEUE);
        let task = handle.spawn(run_upload(upload, receiver, location.clone()));
        Self {
            handle,
            buffer: Vec::with_capacity(WRITE_BUFFER),
            sender: Some(sender),
            task: Some(task),
            location,
        }
    }

    /// The upload task's outcome once it has stopped.
    fn join(&mut self) -> Result<u64, TargetError> {
        let Some(task) = self.task.take() else {
            return Err(TargetError::Failed(format!(
                "upload of {} already ended",
                self.location
            )));
        };
        self.handle.block_on(task).unwrap_or_else(|e| {
            Err(TargetError::Failed(format!(
                "upload of {} stopped: {e}",
                self.location
            )))
        })
    }

    fn send(&mut self, message: Upload) -> std::io::Result<()> {
        let sent = match self.sender.as_ref() {
            Some(sender) => self.handle.block_on(sender.send(message)).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The task stopped early: it failed, and its error says why.
        self.sender = None;
        let reason = match self.join() {
            Err(e) => e.to_string(),
            Ok(_) => format!("upload of {} ended early", self.location),
        };
        Err(std::io::Error::other(reason))
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(WRITE_BUFFER));
        self.send(Upload::Data(Bytes::from(full)))
    }
}

impl Write for MultipartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = WRITE_BUFFER - self.buffer.len();
        let take = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..take]);
        if self.buffer.len() >= WRITE_BUFFER {
            self.send_buffer()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Parts are cut by size; nothing is durable before `finish` anyway.
        Ok(())
    }
}

impl ObjectWriter for MultipartWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, TargetError> {
        self.send_buffer()
            .and_then(|()| self.send(Upload::Finish))
            .map_err(|e| TargetError::Failed(e.to_string()))?;
        self.sender = None;
        self.join()
    }

    fn abort(mut self: Box<Self>) {
        // Closing the channel without `Finish` makes the task abort the upload; wait for it so
        // that the parts are gone before the caller reports the failure.
        self.sender = None;
        let _ = self.join();
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        // Without a wait (a drop may happen anywhere): the task still aborts the upload.
        self.sender = None;
    }
}

async fn run_upload(
    upload: Box<dyn MultipartUpload>,
    mut receiver: mpsc::Receiver<Upload>,
    location: String,
) -> Result<u64, TargetError> {
    let failed = |what: &str, e: object_store::Error| {
        TargetError::Failed(format!("upload of {location} failed ({what}): {e}"))
    };
    let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut size = 0u64;
    loop {
        match receiver.recv().await {
            Some(Upload::Data(bytes)) => {
                if let Err(e) = parts.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = parts.abort().await;
                    return Err(failed("part", e));
                }
                size += bytes.len() as u64;
                parts.put(bytes);
            }
            Some(Upload::Finish) => {
                // `finish` aborts the upload itself when a part or the completion fails.
                parts.finish().await.map_err(|e| failed("complete", e))?;
                return Ok(size);
            }
            None => {
                if let Err(e) = parts.abort().await {
                    tracing::warn!(object = %location, error = %e, "cannot abort an unfinished upload; a bucket lifecycle rule must remove its parts");
                }
                return Err(TargetError::Failed(format!("upload of {location} aborted")));
            }
        }
    }
}

/// A blocking reader over a streamed download.
pub struct DownloadReader {
    handle: Handle,
    receiver: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    task: JoinHandle<()>,
}

impl DownloadReader {
    /// Starts pulling `body` in the background.
    pub fn start(
        handle: Handle,
        mut body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
        location: String,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(DOWNLOAD_QUEUE);
        let task = handle.spawn(async move {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| format!("download of {location} failed: {e}"));
                let stop = piece.is_err();
                if sender.send(piece).await.is_err() || stop {
                    break;
                }
            }
        });
        Self {
            handle,
            receiver,
            current: Bytes::new(),
            task,
        }
    }
}

impl Read for DownloadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.receiver.recv()) {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(reason)) => return Err(std::io::Error::other(reason)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

impl Drop for DownloadReader {
    fn drop(&mut self) {
        // Stops the transfer of a body read only in part (e.g. just the front).
        self.task.abort();
    }
}
