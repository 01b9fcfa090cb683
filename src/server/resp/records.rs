//! Record commands. A round's consecutive record commands (GET, SET, DEL, MGET…) become one
//! service batch: it runs their operations in order and answers once every write in it is
//! durable, so a pipeline of writes costs one group commit, and replies keep the commands'
//! order. Anything else (SELECT, AUTH, a conditional SET…) first runs the batch so far.

use zeroize::Zeroizing;

use super::codec::{Args, Reply};
use super::session::Session;
use crate::service::{BatchOp, BatchOutcome, ServiceError, MAX_BATCH_OPS};

/// How one command's reply is made from its operations' outcomes.
enum Finish {
    /// Already known (an argument error): no operations.
    Ready(Reply),
    /// GET, and SET … GET (its Get first): the value or nil.
    Value,
    /// SET: OK.
    Ok,
    /// DEL/UNLINK: how many existed.
    Deleted,
    /// EXISTS: how many exist.
    Existing,
    /// MGET: values or nils.
    Values,
    /// STRLEN: the value's length or 0.
    Length,
    /// GETDEL (Get then Delete): the value or nil.
    Taken,
    /// TYPE: string or none.
    Type,
}

/// Operations and reply makers of the batch being gathered.
#[derive(Default)]
struct Pending {
    ops: Vec<BatchOp>,
    finishes: Vec<(Finish, usize)>,
}

/// Runs one round of commands and appends their replies to `out`; true when the client asked
/// to close (QUIT).
pub async fn run_round(session: &mut Session, commands: Vec<Args>, out: &mut Vec<u8>) -> bool {
    session.recheck().await;
    let mut pending = Pending::default();
    for mut args in commands {
        let name = args.as_slice()[0].to_ascii_uppercase();
        match plan(session, &name, &mut args) {
            Some((ops, finish)) => {
                if pending.ops.len() + ops.len() > MAX_BATCH_OPS {
                    flush(session, std::mem::take(&mut pending), out).await;
                }
                pending.finishes.push((finish, ops.len()));
                pending.ops.extend(ops);
            }
            None => {
                flush(session, std::mem::take(&mut pending), out).await;
                let (reply, quit) = super::commands::execute(session, &name, args).await;
                reply.encode(session.resp3, out);
                if quit {
                    return true;
                }
            }
        }
    }
    flush(session, pending, out).await;
    false
}

/// A record command as batch operations, or `None` for a command run on its own.
fn plan(session: &Session, name: &[u8], args: &mut Args) -> Option<(Vec<BatchOp>, Finish)> {
    let argc = args.len();
    let fixed = |n: usize| argc == n;
    let (arity_ok, multi_key) = match name {
        b"GET" | b"STRLEN" | b"GETDEL" | b"TYPE" => (fixed(2), false),
        b"SET" => (argc >= 3, false),
        b"DEL" | b"UNLINK" | b"EXISTS" | b"MGET" => (argc >= 2, true),
        b"MSET" => (argc >= 3 && argc % 2 == 1, true),
        _ => return None,
    };
    let lower = || String::from_utf8_lossy(name).to_lowercase();
    if !arity_ok {
        return ready(format!(
            "ERR wrong number of arguments for '{}' command",
            lower()
        ));
    }
    if let Err(reply) = session.authorized() {
        return Some((Vec::new(), Finish::Ready(reply)));
    }
    let keys = if name == b"MSET" {
        (argc - 1) / 2
    } else {
        argc - 1
    };
    if multi_key && keys > MAX_BATCH_OPS {
        return ready(format!(
            "ERR '{}' takes at most {MAX_BATCH_OPS} keys",
            lower()
        ));
    }
    let key =
        |args: &Args, i: usize| record_key(&args.as_slice()[i], session.settings.max_record_key);
    let mut ops = Vec::new();
    let finish = match name {
        b"GET" | b"STRLEN" | b"TYPE" | b"GETDEL" => {
            let key = match key(args, 1) {
                Ok(key) => key,
                Err(reply) => return Some((Vec::new(), Finish::Ready(reply))),
            };
            ops.push(BatchOp::Get { key: key.clone() });
            match name {
                b"GET" => Finish::Value,
                b"STRLEN" => Finish::Length,
                b"TYPE" => Finish::Type,
                _ => {
                    ops.push(BatchOp::Delete { key });
                    Finish::Taken
                }
            }
        }
        b"SET" => {
            let mut get = false;
            for option in &args.as_slice()[3..] {
                match option.to_ascii_uppercase().as_slice() {
                    b"GET" => get = true,
                    // Conditional writes need the current state first: run on their own.
                    b"NX" | b"XX" => return None,
                    b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                        return ready(
                            "ERR records have no expiry: EX, PX, EXAT, PXAT and KEEPTTL are not supported",
                        )
                    }
                    _ => return ready("ERR syntax error"),
                }
            }
            let key = match key(args, 1) {
                Ok(key) => key,
                Err(reply) => return Some((Vec::new(), Finish::Ready(reply))),
            };
            if get {
                ops.push(BatchOp::Get { key: key.clone() });
            }
            ops.push(BatchOp::Put {
                key,
                value: args.take(2),
            });
            if get {
                Finish::Taken
            } else {
                Finish::Ok
            }
        }
        _ => {
            let step = if name == b"MSET" { 2 } else { 1 };
            for i in (1..argc).step_by(step) {
                let key = match key(args, i) {
                    Ok(key) => key,
                    Err(reply) => return Some((Vec::new(), Finish::Ready(reply))),
                };
                ops.push(match name {
                    b"DEL" | b"UNLINK" => BatchOp::Delete { key },
                    b"MSET" => BatchOp::Put {
                        key,
                        value: args.take(i + 1),
                    },
                    _ => BatchOp::Get { key },
                });
            }
            match name {
                b"DEL" | b"UNLINK" => Finish::Deleted,
                b"MSET" => Finish::Ok,
                b"EXISTS" => Finish::Existing,
                _ => Finish::Values,
            }
        }
    };
    Some((ops, finish))
}

fn ready(message: impl Into<String>) -> Option<(Vec<BatchOp>, Finish)> {
    Some((Vec::new(), Finish::Ready(Reply::error(message))))
}

/// A record key: the service's rule (1 to `max` bytes of text without control characters),
/// checked here so that one bad key fails its own command, not the whole batch.
pub fn record_key(raw: &[u8], max: usize) -> Result<String, Reply> {
    let key =
        std::str::from_utf8(raw).map_err(|_| Reply::error("ERR record keys must be UTF-8 text"))?;
    if key.is_empty() || key.len() > max {
        return Err(Reply::error(format!(
            "ERR record key must be 1 to {max} bytes"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(Reply::error(
            "ERR record key must not contain control characters",
        ));
    }
    Ok(key.to_string())
}

/// Runs the gathered batch and appends each command's reply.
async fn flush(session: &Session, pending: Pending, out: &mut Vec<u8>) {
    if pending.finishes.is_empty() {
        return;
    }
    let outcomes = match session.authorized() {
        Ok(_) if pending.ops.is_empty() => Ok(Vec::new()),
        Ok(auth) => run_ops(session, &auth.db_ref, pending.ops).await,
        // Only `Ready` replies were gathered then.
        Err(_) => Ok(Vec::new()),
    };
    match outcomes {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (finish, count) in pending.finishes {
                let mine: Vec<BatchOutcome> = outcomes.by_ref().take(count).collect();
                finish_reply(finish, mine).encode(session.resp3, out);
            }
        }
        Err(err) => {
            let message = error_message(&err);
            for (finish, _) in pending.finishes {
                match finish {
                    Finish::Ready(reply) => reply,
                    _ => Reply::error(message.clone()),
                }
                .encode(session.resp3, out);
            }
        }
    }
}

/// One operation goes through the socket API's own single-record call (same activity-log
/// action); several through one batch.
async fn run_ops(
    session: &Session,
    db: &str,
    mut ops: Vec<BatchOp>,
) -> Result<Vec<BatchOutcome>, ServiceError> {
    let Some(auth) = session.auth.as_ref() else {
        return Err(ServiceError::Unauthenticated);
    };
    let who = &auth.principal;
    let vault = &session.state.vault;
    if ops.len() > 1 {
        // A batch stops returning values past `max_record_size` bytes of them; those reads
        // are made again one by one (a pipeline may read more than that in total).
        let reads: Vec<Option<String>> = ops
            .iter()
            .map(|op| match op {
                BatchOp::Get { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let mut outcomes = vault.record_batch(who, db, ops).await?;
        for (outcome, read) in outcomes.iter_mut().zip(reads) {
            if let (BatchOutcome::Failed(ServiceError::TooLarge(_)), Some(key)) = (&outcome, read) {
                *outcome = match vault.get_record(who, db, &key).await {
                    Ok(value) => BatchOutcome::Value(value),
                    Err(err) => BatchOutcome::Failed(err),
                };
            }
        }
        return Ok(outcomes);
    }
    let outcome = match ops.pop() {
        Some(BatchOp::Get { key }) => match vault.get_record(who, db, &key).await {
            Ok(value) => BatchOutcome::Value(value),
            Err(err) => return single(err),
        },
        Some(BatchOp::Put { key, value }) => {
            let value = Zeroizing::new(value);
            match vault.put_record(who, db, &key, &value).await {
                Ok(()) => BatchOutcome::Written,
                Err(err) => return single(err),
            }
        }
        Some(BatchOp::Delete { key }) => match vault.delete_record(who, db, &key).await {
            Ok(()) => BatchOutcome::Deleted,
            Err(err) => return single(err),
        },
        None => return Ok(Vec::new()),
    };
    Ok(vec![outcome])
}

/// A single operation's error: a missing record is that operation's outcome; anything else
/// fails the command as a whole batch would.
fn single(err: ServiceError) -> Result<Vec<BatchOutcome>, ServiceError> {
    match err {
        ServiceError::NotFound(_) => Ok(vec![BatchOutcome::Failed(err)]),
        other => Err(other),
    }
}

/// The reply of one command from its operations' outcomes.
fn finish_reply(finish: Finish, outcomes: Vec<BatchOutcome>) -> Reply {
    // The first failure other than a missing record fails the command.
    if let Some(err) = outcomes.iter().find_map(|o| match o {
        BatchOutcome::Failed(ServiceError::NotFound(_)) => None,
        BatchOutcome::Failed(err) => Some(err),
        _ => None,
    }) {
        return Reply::error(error_message(err));
    }
    let value = |outcome: BatchOutcome| match outcome {
        BatchOutcome::Value(v) => Reply::Bulk(Zeroizing::new(v)),
        _ => Reply::Null,
    };
    let mut outcomes = outcomes.into_iter();
    let count = |outcomes: std::vec::IntoIter<BatchOutcome>, wanted: fn(&BatchOutcome) -> bool| {
        let mut n = 0;
        for outcome in outcomes {
            n += i64::from(wanted(&outcome));
            if let BatchOutcome::Value(v) = outcome {
                drop(Zeroizing::new(v)); // only counted: wipe it
            }
        }
        Reply::Int(n)
    };
    match finish {
        Finish::Ready(reply) => reply,
        Finish::Ok => Reply::Simple("OK"),
        Finish::Value | Finish::Taken => outcomes.next().map_or(Reply::Null, value),
        Finish::Values => Reply::Array(outcomes.map(value).collect()),
        Finish::Deleted => count(outcomes, |o| matches!(o, BatchOutcome::Deleted)),
        Finish::Existing => count(outcomes, |o| matches!(o, BatchOutcome::Value(_))),
        Finish::Length => match outcomes.next() {
            Some(BatchOutcome::Value(v)) => Reply::Int(Zeroizing::new(v).len() as i64),
            _ => Reply::Int(0),
        },
        Finish::Type => match outcomes.next() {
            Some(BatchOutcome::Value(v)) => {
                drop(Zeroizing::new(v));
                Reply::Simple("string")
            }
            _ => Reply::Simple("none"),
        },
    }
}

/// A service error as a RESP error: the code says what happened, the message is the
/// service's (which names keys and databases, never values).
pub fn error_message(err: &ServiceError) -> String {
    let code = match err {
        ServiceError::KeySuspended(_) => "KEYSUSPENDED",
        ServiceError::KeyDestroyed(_) => "KEYDESTROYED",
        ServiceError::DatabaseDeleted(_) => "DBDELETED",
        ServiceError::Forbidden(_) | ServiceError::NotAuthorizedForKey(_) => "NOPERM",
        ServiceError::Unauthenticated => "NOAUTH",
        // Nothing changed and a retry may succeed.
        _ if matches!(err.code(), "store_unavailable" | "key_backend_unavailable") => "TRYAGAIN",
        _ => "ERR",
    };
    format!("{code} {err}")
}
