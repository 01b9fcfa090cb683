//! Commands run one at a time: handshake (PING, ECHO, HELLO, AUTH, QUIT, RESET, SELECT,
//! CLIENT), introspection ([`super::introspection`]), keyspace (SCAN, DBSIZE) and the
//! conditional SET (NX/XX). Record commands that can be batched are in [`super::records`].

use zeroize::Zeroizing;

use super::codec::{Args, Reply};
use super::records::{error_message, record_key};
use super::session::Session;
use super::{introspection, keyspace};
use crate::service::ServiceError;

/// Commands allowed before authentication.
const NO_AUTH: &[&[u8]] = &[b"PING", b"HELLO", b"AUTH", b"QUIT", b"RESET"];

/// Runs one command; returns its reply and whether to close the connection afterwards.
pub async fn execute(session: &mut Session, name: &[u8], args: Args) -> (Reply, bool) {
    if !NO_AUTH.contains(&name) {
        if let Err(reply) = session.authorized() {
            return (reply, false);
        }
    }
    let a = args.as_slice();
    let reply = match name {
        b"PING" => match a.len() {
            1 => Reply::Simple("PONG"),
            2 => Reply::Bulk(Zeroizing::new(a[1].clone())),
            _ => arity("ping"),
        },
        b"ECHO" if a.len() == 2 => Reply::Bulk(Zeroizing::new(a[1].clone())),
        b"QUIT" => return (Reply::Simple("OK"), true),
        b"RESET" => {
            session.reset();
            Reply::Simple("RESET")
        }
        b"AUTH" => match a.len() {
            2 => ok(session.authenticate(None, &a[1]).await),
            3 => ok(session.authenticate(Some(&a[1]), &a[2]).await),
            _ => arity("auth"),
        },
        b"HELLO" => hello(session, a).await,
        b"SELECT" if a.len() == 2 => ok(session.select(&a[1])),
        b"CLIENT" => client(session, a),
        b"COMMAND" => introspection::command(a),
        b"INFO" => introspection::info(session, a).await,
        b"CONFIG" => introspection::config(a),
        b"SCAN" => keyspace::scan(session, &args).await,
        b"DBSIZE" if a.len() == 1 => keyspace::dbsize(session).await,
        b"SET" => conditional_set(session, args).await,
        b"ECHO" | b"SELECT" | b"DBSIZE" => arity(&String::from_utf8_lossy(name).to_lowercase()),
        _ => {
            // Only the name is echoed: later arguments may be record values.
            let shown: String = String::from_utf8_lossy(&a[0])
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            Reply::error(format!("ERR unknown command '{shown}'"))
        }
    };
    (reply, false)
}

fn ok(result: Result<(), Reply>) -> Reply {
    result.map_or_else(|reply| reply, |()| Reply::Simple("OK"))
}

fn arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
async fn hello(session: &mut Session, a: &[Vec<u8>]) -> Reply {
    let mut resp3 = session.resp3;
    if let Some(version) = a.get(1) {
        match version.as_slice() {
            b"2" => resp3 = false,
            b"3" => resp3 = true,
            _ => return Reply::error("NOPROTO unsupported protocol version"),
        }
    }
    let mut name = None;
    let mut i = 2;
    while i < a.len() {
        match a[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if i + 2 < a.len() => {
                if let Err(reply) = session.authenticate(Some(&a[i + 1]), &a[i + 2]).await {
                    return reply;
                }
                i += 3;
            }
            b"SETNAME" if i + 1 < a.len() => {
                name = Some(String::from_utf8_lossy(&a[i + 1]).into_owned());
                i += 2;
            }
            _ => return Reply::error("ERR syntax error in HELLO option"),
        }
    }
    session.resp3 = resp3;
    if name.is_some() {
        session.name = name;
    }
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("envault")),
        (
            Reply::text("version"),
            Reply::text(env!("CARGO_PKG_VERSION")),
        ),
        (Reply::text("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Int(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ])
}

/// `CLIENT SETNAME|GETNAME|ID|INFO|SETINFO`.
fn client(session: &mut Session, a: &[Vec<u8>]) -> Reply {
    let Some(sub) = a.get(1) else {
        return arity("client");
    };
    match (sub.to_ascii_uppercase().as_slice(), a.len()) {
        (b"SETNAME", 3) => {
            if a[2].iter().any(|b| *b <= b' ' || *b > b'~') {
                return Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = (!a[2].is_empty()).then(|| String::from_utf8_lossy(&a[2]).into_owned());
            Reply::Simple("OK")
        }
        (b"GETNAME", 2) => session.name.clone().map_or(Reply::Null, Reply::Text),
        (b"ID", 2) => Reply::Int(session.id as i64),
        (b"INFO", 2) => Reply::Text(client_info(session)),
        (b"SETINFO", 4) => {
            let value = String::from_utf8_lossy(&a[3]).into_owned();
            match a[2].to_ascii_uppercase().as_slice() {
                b"LIB-NAME" => session.lib_name = Some(value),
                b"LIB-VER" => session.lib_ver = Some(value),
                _ => return Reply::error("ERR Unrecognized option"),
            }
            Reply::Simple("OK")
        }
        _ => Reply::error("ERR unknown or malformed CLIENT subcommand"),
    }
}

fn client_info(session: &Session) -> String {
    let db = session.auth.as_ref().map_or(0, |a| a.db_index);
    format!(
        "id={} addr={}:0 laddr={}:0 fd=0 name={} age={} idle=0 flags=N db={} sub=0 psub=0 \
         ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 tot-mem=0 rbs=0 \
         rbp=0 obl=0 oll=0 omem=0 events=r cmd=client|info user=default redir=-1 resp={} \
         lib-name={} lib-ver={}\n",
        session.id,
        session.settings.socket,
        session.settings.socket,
        session.name.as_deref().unwrap_or(""),
        session.settings.started.elapsed().as_secs(),
        db,
        if session.resp3 { 3 } else { 2 },
        session.lib_name.as_deref().unwrap_or(""),
        session.lib_ver.as_deref().unwrap_or(""),
    )
}

/// `SET key value [NX|XX] [GET]`: the current state is read first, so this is checked then
/// written, not atomic against another connection writing the same key in between.
async fn conditional_set(session: &Session, mut args: Args) -> Reply {
    let (mut nx, mut xx, mut get) = (false, false, false);
    for option in &args.as_slice()[3..] {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Reply::error(
                    "ERR records have no expiry: EX, PX, EXAT, PXAT and KEEPTTL are not supported",
                )
            }
            _ => return Reply::error("ERR syntax error"),
        }
    }
    if nx && xx {
        return Reply::error("ERR syntax error");
    }
    let auth = match session.authorized() {
        Ok(auth) => auth,
        Err(reply) => return reply,
    };
    let key = match record_key(&args.as_slice()[1], session.settings.max_record_key) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let vault = &session.state.vault;
    let current = match vault.get_record(&auth.principal, &auth.db_ref, &key).await {
        Ok(value) => Some(Zeroizing::new(value)),
        Err(ServiceError::NotFound(_)) => None,
        Err(err) => return Reply::error(error_message(&err)),
    };
    let answer = |current: Option<Zeroizing<Vec<u8>>>| match (get, current) {
        (true, Some(value)) => Reply::Bulk(value),
        (true, None) => Reply::Null,
        (false, _) => Reply::Simple("OK"),
    };
    if (nx && current.is_some()) || (xx && current.is_none()) {
        return if get { answer(current) } else { Reply::Null };
    }
    let value = Zeroizing::new(args.take(2));
    match vault
        .put_record(&auth.principal, &auth.db_ref, &key, &value)
        .await
    {
        Ok(()) => answer(current),
        Err(err) => Reply::error(error_message(&err)),
    }
}
