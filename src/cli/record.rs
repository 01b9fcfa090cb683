//! `envault put | get | del | ls`: records of a database.

use std::path::PathBuf;

use clap::Args;

use super::output;
use super::{read_input, CliError, Context};
use crate::api::{RecordListQuery, RecordPage};

/// The largest page the daemon serves.
const MAX_PAGE: usize = 1000;

/// `envault put DB REC [FILE|-]`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Database name or id.
    db: String,
    /// Record key (any UTF-8, up to 1 KiB; it is URL-encoded for you).
    rec: String,
    /// Read the value from FILE; `-` or nothing reads stdin.
    #[arg(value_name = "FILE|-")]
    file: Option<PathBuf>,
}

/// `envault get DB REC`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Database name or id.
    db: String,
    /// Record key.
    rec: String,
}

/// `envault del DB REC`.
#[derive(Debug, Args)]
pub struct DelArgs {
    /// Database name or id.
    db: String,
    /// Record key.
    rec: String,
}

/// `envault ls DB [--prefix P] [--limit N]`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Database name or id.
    db: String,
    /// Only keys starting with P.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Stop after N keys (all keys when absent).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

pub(super) async fn put(ctx: &Context, args: PutArgs) -> Result<(), CliError> {
    let value = read_input(args.file.as_deref())?;
    ctx.client.put_record(&args.db, &args.rec, &value).await?;
    Ok(())
}

/// Writes the value exactly as stored, `--json` or not: values are bytes, not JSON.
pub(super) async fn get(ctx: &Context, args: GetArgs) -> Result<(), CliError> {
    let value = ctx.client.get_record(&args.db, &args.rec).await?;
    output::raw(&value)
}

pub(super) async fn del(ctx: &Context, args: DelArgs) -> Result<(), CliError> {
    ctx.client.delete_record(&args.db, &args.rec).await?;
    Ok(())
}

/// Follows `next` until the last page (or `--limit` keys); human output prints one key a line
/// as pages arrive, `--json` prints one `{"keys", "next"?}` document for everything listed.
pub(super) async fn ls(ctx: &Context, args: LsArgs) -> Result<(), CliError> {
    let limit = args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut query = RecordListQuery {
        prefix: args.prefix,
        after: None,
        limit: None,
    };
    let mut listed = RecordPage {
        keys: Vec::new(),
        next: None,
    };
    let mut count = 0usize;
    loop {
        let remaining = limit.map(|l| l - count);
        query.limit = remaining.map(|r| r.min(MAX_PAGE));
        let page = ctx.client.list_records(&args.db, &query).await?;
        let take = remaining.map_or(page.keys.len(), |r| r.min(page.keys.len()));
        for key in &page.keys[..take] {
            if ctx.json {
                listed.keys.push(key.clone());
            } else {
                output::line(key)?;
            }
        }
        count += take;
        let next = if take < page.keys.len() {
            // The daemon sent more than asked: resume after the last key shown.
            page.keys
                .get(take.wrapping_sub(1))
                .cloned()
                .or(query.after.clone())
        } else {
            page.next
        };
        let done = next.is_none() || page.keys.is_empty() || limit.is_some_and(|l| count >= l);
        if done {
            listed.next = next.filter(|_| limit.is_some_and(|l| count >= l));
            break;
        }
        query.after = next;
    }
    if ctx.json {
        output::json(&listed)?;
    }
    Ok(())
}
