//! Human output of what a key action touches: the daemon's dry-run previews ([`Impact`]) and the
//! receipt of a deletion ([`ShredReceipt`]). The numbers are the daemon's; nothing is computed
//! here.

use super::output::{self, Table};
use super::CliError;
use crate::api::{AffectedResource, Impact, ShredReceipt};

/// Prints a preview. `flag` is the option given with `--dry-run` that changes the outcome:
/// `--retire-old` for a rotation, `--force` for a deletion.
pub(super) fn print_impact(impact: &Impact, flag: bool) -> Result<(), CliError> {
    let databases = impact.databases.len();
    let backups = impact.backups.len();
    let records = impact.total_records;
    let in_use = databases + backups > 0;
    let summary = match impact.action.as_str() {
        "rotate" => format!(
            "would rotate key {}: add a version and rewrap {} wrapped DEK(s) under it (records are not re-encrypted){}",
            impact.key,
            impact.wrapped_deks,
            if flag { ", then destroy the older versions" } else { "" }
        ),
        "disable" => format!(
            "would suspend key {}: {databases} database(s) and {backups} backup(s) holding {records} record(s) locked until enabled",
            impact.key
        ),
        "delete" if !in_use => format!(
            "would delete key {}: it protects nothing",
            impact.key
        ),
        "delete" => format!(
            "would cryptoshred key {}: {databases} database(s) and {backups} backup(s) holding {records} record(s) become unreadable forever{}",
            impact.key,
            if flag {
                ""
            } else {
                "; refused without --force (key_in_use)"
            }
        ),
        other => format!("would {other} key {}", impact.key),
    };
    output::line(&format!("dry run, nothing changed: {summary}"))?;
    if in_use {
        print_resources(impact.databases.iter().chain(&impact.backups))?;
    }
    output::line(&format!(
        "total: {databases} database(s), {backups} backup(s), {records} record(s), {} wrapped DEK(s)",
        impact.wrapped_deks
    ))
}

/// Prints the receipt of `key delete`.
pub(super) fn print_receipt(receipt: &ShredReceipt) -> Result<(), CliError> {
    let headline = if receipt.affected.is_empty() {
        format!("deleted key {}", receipt.key)
    } else {
        format!(
            "destroyed key {} (cryptoshred): {} resource(s) are now unreadable",
            receipt.key,
            receipt.affected.len()
        )
    };
    output::line(&headline)?;
    let versions = if receipt.destroyed_versions.is_empty() {
        "-".to_string()
    } else {
        receipt
            .destroyed_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    output::fields(&[
        ("key", receipt.key.clone()),
        ("destroyed versions", versions),
        ("time", receipt.time.clone()),
        ("audit chain head", receipt.audit_chain_head.clone()),
    ])?;
    if receipt.affected.is_empty() {
        return output::line("affected: none");
    }
    output::line("affected:")?;
    print_resources(receipt.affected.iter())
}

/// `KIND NAME STATE ROLE RECORDS CRN`; the RECORDS column only when the daemon counted them
/// (previews do, shred receipts do not).
fn print_resources<'a>(
    list: impl Iterator<Item = &'a AffectedResource> + Clone,
) -> Result<(), CliError> {
    let counted = list.clone().any(|r| r.records.is_some());
    let mut table = if counted {
        Table::new(&["KIND", "NAME", "STATE", "ROLE", "RECORDS", "CRN"])
    } else {
        Table::new(&["KIND", "NAME", "STATE", "ROLE", "CRN"])
    };
    for r in list {
        let mut cells = vec![
            r.kind.clone(),
            r.name.clone(),
            r.state.clone(),
            r.role.clone(),
        ];
        if counted {
            cells.push(r.records.map_or_else(|| "-".into(), |n| n.to_string()));
        }
        cells.push(r.crn.clone());
        table.row(cells);
    }
    table.print()
}
