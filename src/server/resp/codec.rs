//! RESP framing: an incremental parser for commands (arrays of bulk strings, or inline lines)
//! and an encoder for replies in RESP2 or RESP3.
//!
//! The parser never copies a partial command: [`parse_command`] looks at the bytes buffered so
//! far and either returns one complete command and how many bytes it used, or says more bytes
//! are needed. So any number of pipelined commands in one read, or one command split over many
//! reads, parse the same way. Bulk strings are binary-safe (length-prefixed).

use zeroize::{Zeroize, Zeroizing};

/// Bounds on what one command may hold, so a client cannot make the daemon buffer without end.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest bulk string (a record value is the largest argument).
    pub max_bulk: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Most bytes one command may take on the wire.
    pub max_command: usize,
}

/// Longest inline command or header line.
const MAX_LINE: usize = 64 * 1024;

/// Why the input is not RESP; the connection answers it and closes (it cannot resynchronize).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A header or inline line is malformed.
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
    /// A bulk string is longer than the largest value.
    #[error("Protocol error: invalid bulk length (the largest value is {0} bytes)")]
    BulkTooLong(usize),
    /// Too many arguments.
    #[error("Protocol error: invalid multibulk length (at most {0} arguments)")]
    TooManyArgs(usize),
    /// The whole command is larger than allowed.
    #[error("Protocol error: a command may hold at most {0} bytes")]
    CommandTooLong(usize),
}

/// One command's arguments. They may hold record values, so they are wiped when dropped and
/// have no `Debug`.
pub struct Args(Vec<Vec<u8>>);

impl Args {
    /// Wraps arguments (tests and internal use).
    pub fn new(args: Vec<Vec<u8>>) -> Self {
        Self(args)
    }

    /// The arguments, the command name first.
    pub fn as_slice(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// Moves argument `index` out (leaving it empty), to hand a value on without copying.
    pub fn take(&mut self, index: usize) -> Vec<u8> {
        self.0
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Args {
    fn drop(&mut self) {
        for arg in &mut self.0 {
            arg.zeroize();
        }
    }
}

/// Parses one command from the start of `buf`: `Ok(Some((args, used)))`, or `Ok(None)` when
/// `buf` holds only part of one. An empty inline line gives an empty `args`.
pub fn parse_command(
    buf: &[u8],
    limits: &FrameLimits,
) -> Result<Option<(Args, usize)>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return parse_inline(buf);
    }
    let Some((count, mut pos)) = read_number(buf, 1)? else {
        return Ok(None);
    };
    if count <= 0 {
        // `*0` and `*-1` are empty commands: ignored, like Redis does.
        return Ok(Some((Args(Vec::new()), pos)));
    }
    let count = usize::try_from(count).map_err(|_| ProtocolError::Malformed("bad count"))?;
    if count > limits.max_args {
        return Err(ProtocolError::TooManyArgs(limits.max_args));
    }
    // Lengths are checked before any argument is copied, so a partial command costs no copy.
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err(ProtocolError::Malformed("expected '$'")),
        }
        let Some((len, start)) = read_number(buf, pos + 1)? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| ProtocolError::Malformed("bad bulk length"))?;
        if len > limits.max_bulk {
            return Err(ProtocolError::BulkTooLong(limits.max_bulk));
        }
        let end = start + len;
        if end + 2 > limits.max_command {
            return Err(ProtocolError::CommandTooLong(limits.max_command));
        }
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::Malformed("bulk string not followed by CRLF"));
        }
        spans.push((start, end));
        pos = end + 2;
    }
    let args = spans.iter().map(|&(s, e)| buf[s..e].to_vec()).collect();
    Ok(Some((Args(args), pos)))
}

/// Reads `<integer>\r\n` at `at`; `None` if the line is not complete yet.
fn read_number(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(newline) = rest.iter().take(32).position(|&b| b == b'\n') else {
        if rest.len() >= 32 {
            return Err(ProtocolError::Malformed("length line too long"));
        }
        return Ok(None);
    };
    let line = rest[..newline]
        .strip_suffix(b"\r")
        .ok_or(ProtocolError::Malformed("expected CRLF"))?;
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::Malformed("bad number"))?;
    let n: i64 = text
        .parse()
        .map_err(|_| ProtocolError::Malformed("bad number"))?;
    Ok(Some((n, at + newline + 1)))
}

/// A command typed by hand (`PING\r\n`): words separated by spaces, no quoting.
fn parse_inline(buf: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
    let Some(newline) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
        if buf.len() >= MAX_LINE {
            return Err(ProtocolError::Malformed("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    let args = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((Args(args), newline + 1)))
}

/// A reply, encoded for the connection's protocol version.
pub enum Reply {
    /// `+OK`.
    Simple(&'static str),
    /// `-CODE message`: the code is the first word.
    Error(String),
    /// `:n`.
    Int(i64),
    /// A binary-safe string; wiped when dropped (it may be a record value).
    Bulk(Zeroizing<Vec<u8>>),
    /// Text as a bulk string (never a record value).
    Text(String),
    /// RESP2 `$-1`, RESP3 `_`.
    Null,
    /// `*n`.
    Array(Vec<Reply>),
    /// RESP3 `%n`; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// An error reply; `message` starts with its code (`ERR`, `NOPERM`…).
    pub fn error(message: impl Into<String>) -> Self {
        Reply::Error(message.into())
    }

    /// Text.
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Text(text.into())
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, resp3: bool, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(message) => {
                out.push(b'-');
                // A CR or LF would end the line early and desynchronize the client.
                out.extend(
                    message
                        .bytes()
                        .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(n) => header(out, b':', *n),
            Reply::Bulk(bytes) => bulk(out, bytes),
            Reply::Text(text) => bulk(out, text.as_bytes()),
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len() as i64);
                for item in items {
                    item.encode(resp3, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                for (key, value) in pairs {
                    key.encode(resp3, out);
                    value.encode(resp3, out);
                }
            }
        }
    }
}

fn header(out: &mut Vec<u8>, kind: u8, n: i64) {
    // Written digit by digit: every reply has a header, and this runs without allocating.
    out.push(kind);
    if n < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_bulk: 4096,
        max_args: 64,
        max_command: 1 << 20,
    };

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            bulk(&mut out, arg);
        }
        out
    }

    /// Feeds `wire` in the given chunk sizes, parsing after each, like the connection does.
    fn parse_chunked(wire: &[u8], chunks: &[usize]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf = Vec::new();
        let mut fed = 0;
        let mut commands = Vec::new();
        let mut sizes = chunks.iter().copied().cycle();
        while fed < wire.len() {
            let n = sizes.next().unwrap_or(1).max(1).min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            while let Some((args, used)) = parse_command(&buf, &LIMITS)? {
                commands.push(args.as_slice().to_vec());
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty(), "bytes left over");
        Ok(commands)
    }

    #[test]
    fn pipelined_commands_parse_in_order() {
        let wire = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\r\n\r\nPING hi\r\n";
        let commands = parse_chunked(wire, &[wire.len()]).unwrap();
        assert_eq!(commands[0], vec![b"PING".to_vec()]);
        assert_eq!(
            commands[1],
            vec![b"SET".to_vec(), b"k".to_vec(), b"a\r\n".to_vec()]
        );
        assert_eq!(commands[2], vec![b"PING".to_vec(), b"hi".to_vec()]);
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        let too_long = b"*2\r\n$3\r\nGET\r\n$5000\r\n";
        assert_eq!(
            parse_command(too_long, &LIMITS).err(),
            Some(ProtocolError::BulkTooLong(4096))
        );
        assert_eq!(
            parse_command(b"*65\r\n", &LIMITS).err(),
            Some(ProtocolError::TooManyArgs(64))
        );
        assert!(parse_command(b"*1\r\n$3\r\nGETX\r\n", &LIMITS).is_err());
        assert!(parse_command(b"*1\r\n:3\r\n", &LIMITS).is_err());
        assert!(parse_command(b"*x\r\n", &LIMITS).is_err());
    }

    #[test]
    fn replies_follow_the_protocol_version() {
        let mut out = Vec::new();
        Reply::Null.encode(false, &mut out);
        Reply::Null.encode(true, &mut out);
        Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]).encode(false, &mut out);
        Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]).encode(true, &mut out);
        Reply::error("ERR bad\r\nthing").encode(true, &mut out);
        Reply::Int(-1234).encode(true, &mut out);
        Reply::Int(0).encode(true, &mut out);
        assert_eq!(
            out,
            b"$-1\r\n_\r\n*2\r\n$1\r\na\r\n:1\r\n%1\r\n$1\r\na\r\n:1\r\n-ERR bad  thing\r\n:-1234\r\n:0\r\n"
        );
    }

    proptest! {
        #[test]
        fn any_split_of_encoded_commands_parses_back(
            commands in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6), 1..8),
            chunks in prop::collection::vec(1usize..64, 1..8),
        ) {
            let wire: Vec<u8> = commands.iter().flat_map(|c| encode(c)).collect();
            prop_assert_eq!(parse_chunked(&wire, &chunks).unwrap(), commands);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut rest: &[u8] = &bytes;
            while let Ok(Some((_, used))) = parse_command(rest, &LIMITS) {
                prop_assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
            }
        }

        #[test]
        fn mutated_commands_never_panic(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4),
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut wire = encode(&args);
            for (at, byte) in flips {
                let len = wire.len();
                wire[at % len] = byte;
            }
            let mut rest: &[u8] = &wire;
            while let Ok(Some((_, used))) = parse_command(rest, &LIMITS) {
                prop_assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
            }
        }
    }
}
