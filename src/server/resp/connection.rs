//! One RESP connection: read whatever the client sent, parse every complete command in it, run
//! them as one round (so pipelined writes share one group commit), write every reply with one
//! write, repeat.
//!
//! Buffers may hold record values, so they are wiped: on growth (the old allocation is
//! zeroed before it is freed), after each round's replies are written, and on close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zeroize::{Zeroize, Zeroizing};

use super::codec::{parse_command, Args, FrameLimits, Reply};
use super::session::Session;
use crate::config::Config;
use crate::server::{Accepted, AppState, ServerError};

/// Most arguments in one command: MSET of a full batch of pairs, with room to spare.
const MAX_ARGS: usize = 4096;
/// What a command may carry beyond its largest value (keys, other arguments, framing).
const COMMAND_SLACK: usize = 1 << 20;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Most commands run in one round; the rest wait for the next (bounds the reply buffer).
const MAX_ROUND: usize = 1024;

/// What every connection of the listener shares.
pub struct Settings {
    pub limits: FrameLimits,
    /// How long a command that has started arriving may take to arrive completely.
    pub command_timeout: Duration,
    /// The largest record key, in bytes.
    pub max_record_key: usize,
    pub started: Instant,
    pub socket: String,
}

impl Settings {
    pub fn new(config: &Config, state: &AppState) -> Result<Self, ServerError> {
        let limits = state.vault.limits();
        Ok(Self {
            limits: FrameLimits {
                max_bulk: limits.max_record_size,
                max_args: MAX_ARGS,
                max_command: limits.max_record_size.saturating_add(COMMAND_SLACK),
            },
            command_timeout: config.limits.request_timeout,
            max_record_key: limits.max_record_key,
            started: Instant::now(),
            socket: config.resp.socket.display().to_string(),
        })
    }
}

/// Serves one connection until the client leaves, `QUIT`, a protocol error, the daemon's
/// shutdown, or pressure finding it idle.
pub async fn serve(accepted: Accepted, state: Arc<AppState>, settings: Arc<Settings>) {
    let Accepted {
        mut stream,
        activity,
        peer,
        mut shutdown,
        mut pressure,
    } = accepted;
    let mut session = Session::new(state, Arc::clone(&settings), peer);
    let mut input: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(READ_CHUNK));
    let mut out: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(READ_CHUNK));
    // When the command now arriving started to arrive.
    let mut arriving_since: Option<tokio::time::Instant> = None;
    loop {
        let mut commands: Vec<Args> = Vec::new();
        let mut used = 0;
        let mut fatal = None;
        while commands.len() < MAX_ROUND {
            match parse_command(&input[used..], &settings.limits) {
                Ok(Some((args, n))) => {
                    used += n;
                    if !args.is_empty() {
                        commands.push(args);
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    fatal = Some(err);
                    break;
                }
            }
        }
        if used > 0 {
            input[..used].zeroize();
            input.drain(..used);
        }
        if !commands.is_empty() || fatal.is_some() {
            let in_flight = activity.begin_request();
            let quit = super::records::run_round(&mut session, commands, &mut out).await;
            if let Some(err) = &fatal {
                Reply::error(format!("ERR {err}")).encode(session.resp3, &mut out);
            }
            let written = stream.write_all(&out).await;
            // Only the bytes written this round: the spare capacity holds none of ours, and
            // wiping all of it (`Vec::zeroize`) cost a 16 KiB memset per GET.
            out.as_mut_slice().zeroize();
            out.clear();
            drop(in_flight);
            arriving_since = None;
            if quit || fatal.is_some() || written.is_err() {
                break;
            }
            continue;
        }
        // Nothing complete is buffered: wait for bytes, the shutdown, or pressure.
        let partial = !input.is_empty();
        let deadline = if partial {
            *arriving_since.get_or_insert_with(tokio::time::Instant::now) + settings.command_timeout
        } else {
            arriving_since = None;
            tokio::time::Instant::now()
        };
        reserve_wiping(&mut input, READ_CHUNK);
        let read = stream.read_buf(&mut *input);
        tokio::select! {
            result = read => match result {
                Ok(n) if n > 0 => {}
                _ => break,
            },
            // A command that started arriving must finish within the request timeout.
            _ = tokio::time::sleep_until(deadline), if partial => break,
            _ = shutdown.changed() => break,
            // An idle pooled connection may stay open; pressure closes it when a slot is due.
            changed = pressure.changed() => {
                if changed.is_err() || (!partial && activity.is_idle()) {
                    break;
                }
            }
        }
    }
}

/// Makes room for `extra` more bytes; a reallocation copies into a new buffer and wipes the
/// old one instead of leaving its bytes in freed memory.
fn reserve_wiping(buf: &mut Zeroizing<Vec<u8>>, extra: usize) {
    if buf.capacity() - buf.len() >= extra {
        return;
    }
    let wanted = (buf.len() + extra).max(buf.capacity() * 2);
    let mut grown = Zeroizing::new(Vec::with_capacity(wanted));
    grown.extend_from_slice(buf);
    std::mem::swap(buf, &mut grown);
    // `grown` (the old allocation) is wiped as it drops.
}
