//! Introspection: `COMMAND` (and `COUNT`, `INFO`, `DOCS`), `INFO` (server and keyspace) and
//! `CONFIG GET`, answered in the shapes redis-cli, redis-py and redis-benchmark expect.

use super::codec::Reply;
use super::keyspace;
use super::session::Session;

/// Name, arity (negative: at least), flags, first key, last key, step, group, summary.
type Spec = (
    &'static str,
    i64,
    &'static [&'static str],
    i64,
    i64,
    i64,
    &'static str,
    &'static str,
);

/// The commands served, for `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS` and `COMMAND INFO`.
const COMMANDS: &[Spec] = &[
    (
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
        "connection",
        "Authenticates the connection with an app token.",
    ),
    (
        "client",
        -2,
        &["loading", "stale"],
        0,
        0,
        0,
        "connection",
        "Names the connection and reports on it.",
    ),
    (
        "command",
        -1,
        &["loading", "stale"],
        0,
        0,
        0,
        "server",
        "Describes the commands served.",
    ),
    (
        "config",
        -2,
        &["loading", "stale"],
        0,
        0,
        0,
        "server",
        "Reports settings (GET only).",
    ),
    (
        "dbsize",
        1,
        &["readonly", "fast"],
        0,
        0,
        0,
        "server",
        "Counts the records of the selected database.",
    ),
    (
        "del",
        -2,
        &["write"],
        1,
        -1,
        1,
        "generic",
        "Deletes records; durable when answered.",
    ),
    (
        "echo",
        2,
        &["fast"],
        0,
        0,
        0,
        "connection",
        "Returns its argument.",
    ),
    (
        "exists",
        -2,
        &["readonly", "fast"],
        1,
        -1,
        1,
        "generic",
        "Counts the named records that exist.",
    ),
    (
        "get",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        "string",
        "Reads a record.",
    ),
    (
        "getdel",
        2,
        &["write", "fast"],
        1,
        1,
        1,
        "string",
        "Reads a record and deletes it.",
    ),
    (
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
        "connection",
        "Picks the protocol version, optionally authenticating.",
    ),
    (
        "info",
        -1,
        &["loading", "stale"],
        0,
        0,
        0,
        "server",
        "Reports the server and keyspace sections.",
    ),
    (
        "mget",
        -2,
        &["readonly", "fast"],
        1,
        -1,
        1,
        "string",
        "Reads several records.",
    ),
    (
        "mset",
        -3,
        &["write"],
        1,
        -1,
        2,
        "string",
        "Writes several records; durable when answered.",
    ),
    (
        "ping",
        -1,
        &["fast"],
        0,
        0,
        0,
        "connection",
        "Answers PONG.",
    ),
    (
        "quit",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
        "connection",
        "Closes the connection.",
    ),
    (
        "reset",
        1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
        "connection",
        "Resets the connection to a fresh, unauthenticated one.",
    ),
    (
        "scan",
        -2,
        &["readonly"],
        0,
        0,
        0,
        "generic",
        "Iterates over record keys.",
    ),
    (
        "select",
        2,
        &["loading", "stale", "fast"],
        0,
        0,
        0,
        "connection",
        "Switches to another database of the token.",
    ),
    (
        "set",
        -3,
        &["write"],
        1,
        1,
        1,
        "string",
        "Writes a record (NX, XX, GET); durable when answered.",
    ),
    (
        "strlen",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        "string",
        "Returns the length of a record's value.",
    ),
    (
        "type",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        "generic",
        "Returns string or none.",
    ),
    (
        "unlink",
        -2,
        &["write", "fast"],
        1,
        -1,
        1,
        "generic",
        "Deletes records; durable when answered.",
    ),
];

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS [name…]`, `COMMAND INFO [name…]`.
pub fn command(a: &[Vec<u8>]) -> Reply {
    let wanted = |spec: &Spec| {
        a.len() <= 2
            || a[2..]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(spec.0.as_bytes()))
    };
    match a.get(1).map(|s| s.to_ascii_uppercase()).as_deref() {
        None => Reply::Array(COMMANDS.iter().map(command_info).collect()),
        Some(b"COUNT") => Reply::Int(COMMANDS.len() as i64),
        Some(b"INFO") => Reply::Array(
            COMMANDS
                .iter()
                .filter(|s| wanted(s))
                .map(command_info)
                .collect(),
        ),
        Some(b"DOCS") => Reply::Map(
            COMMANDS
                .iter()
                .filter(|s| wanted(s))
                .map(|s| {
                    let docs = Reply::Map(vec![
                        (Reply::text("summary"), Reply::text(s.7)),
                        (Reply::text("since"), Reply::text("1.0.0")),
                        (Reply::text("group"), Reply::text(s.6)),
                    ]);
                    (Reply::text(s.0), docs)
                })
                .collect(),
        ),
        Some(_) => Reply::error("ERR unknown or malformed COMMAND subcommand"),
    }
}

fn command_info(spec: &Spec) -> Reply {
    Reply::Array(vec![
        Reply::text(spec.0),
        Reply::Int(spec.1),
        Reply::Array(spec.2.iter().map(|f| Reply::Simple(f)).collect()),
        Reply::Int(spec.3),
        Reply::Int(spec.4),
        Reply::Int(spec.5),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// `CONFIG GET name`: what durability clients and benchmarks ask about; nothing else.
pub fn config(a: &[Vec<u8>]) -> Reply {
    if a.len() != 3 || !a[1].eq_ignore_ascii_case(b"GET") {
        return Reply::error("ERR only CONFIG GET is supported");
    }
    let value = match a[2].to_ascii_lowercase().as_slice() {
        b"save" => "",
        b"appendonly" => "yes",
        b"appendfsync" => "always",
        _ => return Reply::Map(Vec::new()),
    };
    Reply::Map(vec![(
        Reply::text(String::from_utf8_lossy(&a[2]).to_lowercase()),
        Reply::text(value),
    )])
}

/// `INFO [section…]`: server and keyspace.
pub async fn info(session: &Session, a: &[Vec<u8>]) -> Reply {
    let wants = |section: &str| {
        a.len() < 2
            || a[1..].iter().any(|s| {
                s.eq_ignore_ascii_case(section.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"default")
                    || s.eq_ignore_ascii_case(b"everything")
            })
    };
    let mut text = String::new();
    if wants("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:7.2.0\r\nenvault_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\nexecutable:envault\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            session.settings.started.elapsed().as_secs(),
        ));
    }
    if wants("keyspace") {
        text.push_str("# Keyspace\r\n");
        if let Some(auth) = &session.auth {
            for (index, id) in auth.principal.databases.iter().enumerate() {
                // Databases the token may no longer use (deleted, shredded) are left out.
                if let Ok(keys) = keyspace::count_keys(session, &id.to_string()).await {
                    if keys > 0 {
                        text.push_str(&format!("db{index}:keys={keys},expires=0,avg_ttl=0\r\n"));
                    }
                }
            }
        }
    }
    Reply::Text(text)
}
