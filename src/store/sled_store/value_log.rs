//! Large record values in append-only segment files beside sled (`<store dir>/values/`).
//!
//! Why they are not in sled: sled's page cache does not bound the daemon's memory when a whole
//! database is read or written in one pass (a backup, a restore). Leaves over 128 KiB become
//! blobs whose cache entries count only their header, and each of the cache's 256 shards only
//! evicts after 64 accesses have queued up for it, which a scan never produces (BENCHMARKS.md,
//! "Why sled keeps what a scan reads"). So a value over [`INLINE_MAX`] bytes is written here
//! and sled keeps a [`Pointer`] of 25 bytes; reads go through the kernel's page cache, which the
//! kernel reclaims, instead of the daemon's heap.
//!
//! Segment file `<id as 16 hex digits>.evv`:
//!
//! ```text
//! header : "EVVL" | version u16 LE (1) | 0u16
//! entry  : value_len u32 LE | key_len u16 LE | crc32 u32 LE of (key ‖ value) | key | value
//! ```
//!
//! The key is the full sled key (database id ‖ record key): a reader checks it, so a pointer can
//! never hand out another record's value, and compaction (`super::compaction`) can find the
//! sled entry that owns each value. Entries are only appended; an overwritten or deleted value
//! becomes dead bytes, counted per segment, and compaction copies a mostly dead segment's live
//! values forward and deletes the file.
//!
//! Durability: [`ValueLog::sync`] fsyncs every segment written since the last sync (and the
//! directory when a segment was created) and the store calls it before sled's flush, so a
//! pointer that a flush made durable never points at bytes that are not.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::store::StoreError;

/// Values longer than this many bytes go to the value log; shorter ones stay inline in sled,
/// where small records are cheapest (one B-tree lookup, no extra file or fsync).
pub const INLINE_MAX: usize = 2048;

/// A segment is closed and a new one started once it reaches this size.
pub const SEGMENT_MAX: u64 = 64 << 20;

const SEGMENT_MAGIC: &[u8; 4] = b"EVVL";
const SEGMENT_VERSION: u16 = 1;
const SEGMENT_HEADER_LEN: u64 = 8;
const ENTRY_HEADER_LEN: usize = 10;
const POINTER_MAGIC: &[u8; 4] = b"EVVP";
const POINTER_VERSION: u8 = 1;
const POINTER_LEN: usize = 25;

/// Where a value lives: the sled value for records kept in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// Segment id (its file name).
    pub segment: u64,
    /// Offset of the entry (its header) in the segment file.
    pub offset: u64,
    /// Length of the value.
    pub value_len: u32,
}

impl Pointer {
    /// The 25 bytes stored in sled.
    pub fn encode(&self) -> [u8; POINTER_LEN] {
        let mut out = [0u8; POINTER_LEN];
        out[..4].copy_from_slice(POINTER_MAGIC);
        out[4] = POINTER_VERSION;
        out[5..13].copy_from_slice(&self.segment.to_le_bytes());
        out[13..21].copy_from_slice(&self.offset.to_le_bytes());
        out[21..25].copy_from_slice(&self.value_len.to_le_bytes());
        out
    }

    /// `Ok(None)` for an inline value (a sealed record starts with its own magic, never this
    /// one); an error for a pointer of another version or length.
    pub fn decode(stored: &[u8]) -> Result<Option<Self>, StoreError> {
        if !stored.starts_with(POINTER_MAGIC) {
            return Ok(None);
        }
        if stored.len() != POINTER_LEN || stored[4] != POINTER_VERSION {
            return Err(corrupt("value pointer", "unknown version or length"));
        }
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&stored[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&stored[21..25]);
        Ok(Some(Self {
            segment: u64_at(5),
            offset: u64_at(13),
            value_len: u32::from_le_bytes(len),
        }))
    }

    fn entry_len(&self, key_len: usize) -> u64 {
        (ENTRY_HEADER_LEN + key_len) as u64 + u64::from(self.value_len)
    }
}

/// Bytes written to a segment and how many of them no longer back any record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Entry bytes appended (after the header).
    pub total: u64,
    /// Entry bytes of values overwritten, deleted or copied forward.
    pub dead: u64,
}

/// One entry read back in order by [`SegmentEntries`].
pub struct Entry {
    /// Where it is.
    pub pointer: Pointer,
    /// The full sled key.
    pub key: Vec<u8>,
    /// The sealed record.
    pub value: Vec<u8>,
}

struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
    /// Segments written since the last sync, by id.
    unsynced: BTreeMap<u64, Arc<File>>,
    /// A segment file was created since the last sync: the directory needs an fsync too.
    dir_dirty: bool,
}

/// The open value log of one store.
pub struct ValueLog {
    dir: PathBuf,
    segment_max: u64,
    active: Mutex<Active>,
    /// Read handles of every segment. A reader clones a handle, so a segment that compaction
    /// unlinks meanwhile stays readable through it.
    readers: RwLock<HashMap<u64, Arc<File>>>,
    stats: Mutex<BTreeMap<u64, SegmentStats>>,
    /// Held for a whole sync, so a second caller cannot return before the fsyncs of writes it
    /// depends on (taken by the first caller) have finished.
    sync_lock: Mutex<()>,
}

fn corrupt(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn io(context: &str, err: std::io::Error) -> StoreError {
    StoreError::Backend(format!("value log: {context}: {err}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.evv"))
}

fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..4].copy_from_slice(SEGMENT_MAGIC);
    header[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header
}

fn check_header(file: &File, id: u64) -> Result<(), StoreError> {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| io(&format!("segment {id:016x} header"), e))?;
    if &header[..4] != SEGMENT_MAGIC {
        return Err(corrupt(&format!("segment {id:016x}"), "bad magic"));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != SEGMENT_VERSION {
        return Err(corrupt(
            &format!("segment {id:016x}"),
            format!("unknown version {version}"),
        ));
    }
    Ok(())
}

fn create_segment(dir: &Path, id: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io(&format!("create {}", path.display()), e))?;
    file.write_all_at(&segment_header(), 0)
        .map_err(|e| io("write segment header", e))?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync the values directory", e))
}

fn entry_crc(key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(value);
    hasher.finalize()
}

fn entry_header(key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let value_len = u32::try_from(value.len())
        .map_err(|_| StoreError::Backend("value log: a value over 4 GiB".into()))?;
    let key_len = u16::try_from(key.len())
        .map_err(|_| StoreError::Backend("value log: a key over 64 KiB".into()))?;
    let mut header = Vec::with_capacity(ENTRY_HEADER_LEN + key.len());
    header.extend_from_slice(&value_len.to_le_bytes());
    header.extend_from_slice(&key_len.to_le_bytes());
    header.extend_from_slice(&entry_crc(key, value).to_le_bytes());
    header.extend_from_slice(key);
    Ok(header)
}

impl ValueLog {
    /// Opens (or creates) the value log in `dir`; new values go to the newest segment.
    pub fn open(dir: &Path, segment_max: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("create the values directory", e))?;
        let mut readers = HashMap::new();
        let mut stats = BTreeMap::new();
        let listing = std::fs::read_dir(dir).map_err(|e| io("list the values directory", e))?;
        for item in listing {
            let item = item.map_err(|e| io("list the values directory", e))?;
            let name = item.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".evv"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(item.path())
                .map_err(|e| io(&format!("open segment {id:016x}"), e))?;
            let len = file.metadata().map_err(|e| io("segment size", e))?.len();
            if len <= SEGMENT_HEADER_LEN {
                // A run that wrote no large value left an empty segment, or a crash cut the
                // creation of one short of its header: nothing can point into it either way,
                // and restarts would otherwise pile them up (or, for the torn one, fail).
                drop(file);
                std::fs::remove_file(item.path()).map_err(|e| io("remove an empty segment", e))?;
                continue;
            }
            check_header(&file, id)?;
            stats.insert(
                id,
                SegmentStats {
                    total: len.saturating_sub(SEGMENT_HEADER_LEN),
                    dead: 0,
                },
            );
            readers.insert(id, Arc::new(file));
        }
        // Every run appends to a new segment: an entry cut short by a crash then stays the
        // last thing in its file, where a sequential read may stop without missing anything.
        let active_id = readers.keys().max().map_or(1, |id| id + 1);
        let file = Arc::new(create_segment(dir, active_id)?);
        readers.insert(active_id, Arc::clone(&file));
        stats.insert(active_id, SegmentStats::default());
        let len = SEGMENT_HEADER_LEN;
        let unsynced = BTreeMap::from([(active_id, Arc::clone(&file))]);
        let dir_dirty = true;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_max,
            active: Mutex::new(Active {
                id: active_id,
                file,
                len,
                unsynced,
                dir_dirty,
            }),
            readers: RwLock::new(readers),
            stats: Mutex::new(stats),
            sync_lock: Mutex::new(()),
        })
    }

    /// Appends `value` under the full sled `key`; durable after the next [`ValueLog::sync`].
    pub fn append(&self, key: &[u8], value: &[u8]) -> Result<Pointer, StoreError> {
        let header = entry_header(key, value)?;
        let entry_len = (header.len() + value.len()) as u64;
        let mut active = lock(&self.active);
        if active.len > SEGMENT_HEADER_LEN && active.len + entry_len > self.segment_max {
            self.roll(&mut active)?;
        }
        let offset = active.len;
        // On a failed write (disk full) `len` stays put, so the next entry overwrites the
        // partial one and no pointer ever names it.
        active
            .file
            .write_all_at(&header, offset)
            .and_then(|()| {
                active
                    .file
                    .write_all_at(value, offset + header.len() as u64)
            })
            .map_err(|e| io("append", e))?;
        active.len += entry_len;
        let (id, file) = (active.id, Arc::clone(&active.file));
        active.unsynced.entry(id).or_insert(file);
        drop(active);
        lock(&self.stats).entry(id).or_default().total += entry_len;
        Ok(Pointer {
            segment: id,
            offset,
            value_len: value.len() as u32,
        })
    }

    fn roll(&self, active: &mut Active) -> Result<(), StoreError> {
        let id = active.id + 1;
        let file = Arc::new(create_segment(&self.dir, id)?);
        self.readers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&file));
        lock(&self.stats).insert(id, SegmentStats::default());
        active.unsynced.insert(id, Arc::clone(&file));
        active.dir_dirty = true;
        active.id = id;
        active.file = file;
        active.len = SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// Reads the value `pointer` names, checking that it belongs to `key`. `Ok(None)` when its
    /// segment is gone (compacted meanwhile): the caller reads the record's pointer again.
    pub fn read(&self, pointer: &Pointer, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let file = {
            let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
            match readers.get(&pointer.segment) {
                Some(file) => Arc::clone(file),
                None => return Ok(None),
            }
        };
        let what = || format!("value at {:016x}:{}", pointer.segment, pointer.offset);
        let mut head = vec![0u8; ENTRY_HEADER_LEN + key.len()];
        file.read_exact_at(&mut head, pointer.offset)
            .map_err(|e| io(&what(), e))?;
        let value_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let key_len = u16::from_le_bytes([head[4], head[5]]) as usize;
        let crc = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
        if value_len != pointer.value_len || key_len != key.len() || &head[10..] != key {
            return Err(corrupt(&what(), "the entry belongs to another record"));
        }
        let mut value = vec![0u8; value_len as usize];
        file.read_exact_at(&mut value, pointer.offset + head.len() as u64)
            .map_err(|e| io(&what(), e))?;
        if entry_crc(key, &value) != crc {
            return Err(corrupt(&what(), "checksum mismatch"));
        }
        Ok(Some(value))
    }

    /// Makes every value appended before this call durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let _one_at_a_time = lock(&self.sync_lock);
        let (files, dir_dirty) = {
            let mut active = lock(&self.active);
            (
                std::mem::take(&mut active.unsynced),
                std::mem::replace(&mut active.dir_dirty, false),
            )
        };
        let result = files
            .values()
            .try_for_each(|file| file.sync_data().map_err(|e| io("fsync a segment", e)))
            .and_then(|()| {
                if dir_dirty {
                    sync_dir(&self.dir)
                } else {
                    Ok(())
                }
            });
        if result.is_err() {
            // Retry them all at the next sync rather than report a later one durable.
            let mut active = lock(&self.active);
            active.unsynced.extend(files);
            active.dir_dirty |= dir_dirty;
        }
        result
    }

    /// Counts the entry `pointer` names (for `key_len` key bytes) as dead.
    pub fn mark_dead(&self, pointer: &Pointer, key_len: usize) {
        if let Some(stats) = lock(&self.stats).get_mut(&pointer.segment) {
            stats.dead = stats.dead.saturating_add(pointer.entry_len(key_len));
        }
    }

    /// Restores a segment's dead-byte count persisted by an earlier run.
    pub fn set_dead(&self, segment: u64, dead: u64) {
        if let Some(stats) = lock(&self.stats).get_mut(&segment) {
            stats.dead = dead.min(stats.total);
        }
    }

    /// Every segment's counters.
    pub fn stats(&self) -> BTreeMap<u64, SegmentStats> {
        lock(&self.stats).clone()
    }

    /// The segment new values go to (never compacted).
    pub fn active_segment(&self) -> u64 {
        lock(&self.active).id
    }

    /// Reads segment `id` from the start, entry by entry, through a bounded buffer.
    pub fn entries(&self, id: u64) -> Result<SegmentEntries, StoreError> {
        let file = File::open(segment_path(&self.dir, id)).map_err(|e| io("open a segment", e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| io("segment header", e))?;
        Ok(SegmentEntries {
            segment: id,
            reader,
            offset: SEGMENT_HEADER_LEN,
            end: SegmentEnd::Reading,
        })
    }

    /// Deletes segment `id` once nothing points into it any more.
    pub fn remove_segment(&self, id: u64) -> Result<(), StoreError> {
        self.readers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        lock(&self.stats).remove(&id);
        std::fs::remove_file(segment_path(&self.dir, id))
            .map_err(|e| io("remove a compacted segment", e))?;
        sync_dir(&self.dir)
    }
}

/// How a sequential read of a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Not yet at the end.
    Reading,
    /// At the end of the file, or at an entry cut short by it: a crash while appending, which
    /// can only hit the last entry since every run starts a new segment.
    Clean,
    /// At an entry whose checksum fails: entries after it cannot be trusted or found.
    Damaged,
}

/// The entries of one segment, in file order, up to the first one that is cut short or damaged.
pub struct SegmentEntries {
    segment: u64,
    reader: BufReader<File>,
    offset: u64,
    end: SegmentEnd,
}

impl SegmentEntries {
    /// How the read ended (once the iterator has returned `None`).
    pub fn end(&self) -> SegmentEnd {
        self.end
    }
}

impl Iterator for SegmentEntries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.end != SegmentEnd::Reading {
            return None;
        }
        // Any short read is the end of the file (or an I/O error, which ends the read the
        // same way: the caller then keeps the segment).
        self.end = SegmentEnd::Clean;
        let mut head = [0u8; ENTRY_HEADER_LEN];
        self.reader.read_exact(&mut head).ok()?;
        let value_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let key_len = u16::from_le_bytes([head[4], head[5]]) as usize;
        let crc = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
        let mut key = vec![0u8; key_len];
        self.reader.read_exact(&mut key).ok()?;
        let mut value = Vec::new();
        (&mut self.reader)
            .take(u64::from(value_len))
            .read_to_end(&mut value)
            .ok()?;
        if value.len() != value_len as usize {
            return None;
        }
        if entry_crc(&key, &value) != crc {
            self.end = SegmentEnd::Damaged;
            return None;
        }
        self.end = SegmentEnd::Reading;
        let pointer = Pointer {
            segment: self.segment,
            offset: self.offset,
            value_len,
        };
        self.offset += pointer.entry_len(key_len);
        Some(Entry {
            pointer,
            key,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_never_match_a_sealed_record() {
        let pointer = Pointer {
            segment: 7,
            offset: 1 << 40,
            value_len: 65_536,
        };
        assert_eq!(Pointer::decode(&pointer.encode()).unwrap(), Some(pointer));
        assert_eq!(Pointer::decode(b"EVRC\x01rest of a record").unwrap(), None);
        assert!(Pointer::decode(b"EVVP\x02").is_err());
    }

    #[test]
    fn values_read_back_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 3000]).collect();
        let pointers: Vec<Pointer> = {
            let log = ValueLog::open(dir.path(), 8 << 10).unwrap();
            let pointers: Vec<Pointer> = values
                .iter()
                .enumerate()
                .map(|(i, v)| log.append(format!("k{i}").as_bytes(), v).unwrap())
                .collect();
            log.sync().unwrap();
            // 8 KiB segments hold two 3 KB entries each.
            assert_eq!(log.stats().len(), 3);
            pointers
        };
        let log = ValueLog::open(dir.path(), 8 << 10).unwrap();
        assert_eq!(log.active_segment(), 4);
        for (i, pointer) in pointers.iter().enumerate() {
            let key = format!("k{i}");
            assert_eq!(
                log.read(pointer, key.as_bytes()).unwrap().unwrap(),
                values[i]
            );
        }
        let listed: Vec<Vec<u8>> = log.entries(1).unwrap().map(|e| e.key).collect();
        assert_eq!(listed, vec![b"k0".to_vec(), b"k1".to_vec()]);
        // Restarts that write nothing do not pile up empty segments.
        drop(log);
        for _ in 0..3 {
            drop(ValueLog::open(dir.path(), 8 << 10).unwrap());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        // A crash between creating a segment and writing its header leaves a short file.
        std::fs::write(segment_path(dir.path(), 9), b"EVV").unwrap();
        let log = ValueLog::open(dir.path(), 8 << 10).unwrap();
        assert!(!segment_path(dir.path(), 9).exists());
        assert_eq!(log.active_segment(), 4);
    }

    #[test]
    fn a_wrong_key_a_flipped_bit_or_a_bad_header_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValueLog::open(dir.path(), SEGMENT_MAX).unwrap();
        let pointer = log.append(b"key-a", &[9u8; 5000]).unwrap();
        log.sync().unwrap();
        assert!(matches!(
            log.read(&pointer, b"key-b"),
            Err(StoreError::Corrupt { .. })
        ));
        let path = segment_path(dir.path(), pointer.segment);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        drop(log);
        let log = ValueLog::open(dir.path(), SEGMENT_MAX).unwrap();
        assert!(matches!(
            log.read(&pointer, b"key-a"),
            Err(StoreError::Corrupt { .. })
        ));
        // The damaged entry is also where a sequential read stops, and says so.
        let mut entries = log.entries(pointer.segment).unwrap();
        assert!(entries.next().is_none());
        assert_eq!(entries.end(), SegmentEnd::Damaged);
        drop(log);
        bytes[0] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            ValueLog::open(dir.path(), SEGMENT_MAX),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn dead_bytes_are_counted_and_a_removed_segment_reads_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValueLog::open(dir.path(), 8 << 10).unwrap();
        let a = log.append(b"a", &[1u8; 3000]).unwrap();
        let b = log.append(b"b", &[2u8; 3000]).unwrap();
        log.append(b"c", &[3u8; 3000]).unwrap();
        log.sync().unwrap();
        log.mark_dead(&a, 1);
        assert_eq!(log.stats()[&1].dead, 3011);
        log.set_dead(1, u64::MAX);
        assert_eq!(log.stats()[&1].dead, log.stats()[&1].total);
        log.remove_segment(1).unwrap();
        assert_eq!(log.read(&b, b"b").unwrap(), None);
        assert!(!segment_path(dir.path(), 1).exists());
    }
}
