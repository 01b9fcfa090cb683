//! Reclaims the disk space of dead values: a closed segment at least half dead has its live
//! values copied forward to the active segment and is then deleted.
//!
//! An entry is live when the record's sled value is still exactly the pointer to it. The copy
//! is swapped in with compare-and-swap, so a write or delete racing with the copy wins and the
//! copy counts as dead. The old segment is deleted only after a store flush has made both the
//! copies and the new pointers durable; a reader that still held an old pointer finds its
//! segment gone and reads the record's pointer again (`SledShared::resolve`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::value_log::SegmentEnd;
use super::SledShared;
use crate::store::StoreError;

/// Segments worth compacting: closed, with data, at least half of it dead.
pub(super) fn candidates(shared: &SledShared) -> Vec<u64> {
    let active = shared.values.active_segment();
    shared
        .values
        .stats()
        .into_iter()
        .filter(|(id, stats)| {
            *id != active
                && !shared.damaged(*id)
                && stats.total > 0
                && stats.dead * 2 >= stats.total
        })
        .map(|(id, _)| id)
        .collect()
}

/// Compacts every candidate; stops early when the store is closing.
pub(super) fn run(shared: &Arc<SledShared>) -> Result<(), StoreError> {
    // One compaction at a time: the candidates are chosen under the lock, so a second run
    // never picks a segment the first one already removed.
    let _one_at_a_time = shared
        .compaction_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for segment in candidates(shared) {
        if shared.closing.load(Ordering::Relaxed) {
            return Ok(());
        }
        compact(shared, segment)?;
    }
    Ok(())
}

/// Copies segment `id`'s live values forward, then deletes it.
pub(super) fn compact(shared: &SledShared, id: u64) -> Result<(), StoreError> {
    let mut entries = shared.values.entries(id)?;
    let mut moved = 0u64;
    for entry in entries.by_ref() {
        if shared.closing.load(Ordering::Relaxed) {
            return Ok(());
        }
        let old = entry.pointer.encode();
        let live = shared
            .records
            .get(&entry.key)?
            .is_some_and(|current| current.as_ref() == old.as_slice());
        if !live {
            continue;
        }
        let new = shared.values.append(&entry.key, &entry.value)?;
        let swapped = shared.records.compare_and_swap(
            &entry.key,
            Some(old.as_slice()),
            Some(new.encode().as_slice()),
        )?;
        match swapped {
            Ok(()) => moved += 1,
            Err(_) => shared.values.mark_dead(&new, entry.key.len()),
        }
    }
    if entries.end() == SegmentEnd::Damaged {
        // Entries after a damaged one cannot be found, so the file must stay: whatever still
        // points into it keeps reading (and reports the damage where it is).
        tracing::error!(
            segment = format_args!("{id:016x}"),
            "value log: a damaged entry stops compaction of this segment; keeping it"
        );
        shared.mark_damaged(id);
        return Ok(());
    }
    shared.flush()?;
    shared.values.remove_segment(id)?;
    shared.forget_segment(id)?;
    shared.compacted_segments.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        segment = format_args!("{id:016x}"),
        moved,
        "value log: compacted a segment"
    );
    Ok(())
}
