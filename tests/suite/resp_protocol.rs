//! The Redis-protocol front end over a raw Unix socket, without outside programs: the real
//! daemon with `[resp] socket`, commands written as RESP bytes, replies parsed here.
//! (`tests/suite/resp_clients.rs` drives it with redis-cli and redis-py.)

use crate::common;
use crate::lifecycle_support;

use std::path::PathBuf;
use std::time::Duration;

use common::{allow_databases, Daemon};
use envault::client::Client;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// A reply as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum R {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<R>),
    Map(Vec<(R, R)>),
}

impl R {
    fn error(&self) -> &str {
        match self {
            R::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

fn ok() -> R {
    R::Simple("OK".into())
}

fn bulk(v: &[u8]) -> R {
    R::Bulk(v.to_vec())
}

/// One RESP connection.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(path: &PathBuf) -> Conn {
        Conn {
            stream: UnixStream::connect(path)
                .await
                .expect("connect to the RESP socket"),
            buf: Vec::new(),
        }
    }

    /// Sends commands (pipelined, one write) and reads one reply per command.
    async fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> Vec<R> {
        let mut wire = Vec::new();
        for args in commands {
            wire.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for arg in args {
                wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                wire.extend_from_slice(arg);
                wire.extend_from_slice(b"\r\n");
            }
        }
        self.stream.write_all(&wire).await.expect("write commands");
        let mut replies = Vec::new();
        for _ in commands {
            replies.push(self.reply().await);
        }
        replies
    }

    async fn cmd(&mut self, args: &[&[u8]]) -> R {
        self.pipeline(&[args.to_vec()]).await.remove(0)
    }

    async fn reply(&mut self) -> R {
        loop {
            if let Some((reply, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return reply;
            }
            let mut chunk = vec![0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut chunk))
                .await
                .expect("a reply within 20 s")
                .expect("read");
            assert!(
                n > 0,
                "the daemon closed the connection; have {:?}",
                self.buf
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses one reply at the start of `buf`.
fn parse(buf: &[u8]) -> Option<(R, usize)> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).expect("header is text");
    let next = line_end + 2;
    let count = || line.parse::<i64>().expect("a number");
    match buf[0] {
        b'+' => Some((R::Simple(line.into()), next)),
        b'-' => Some((R::Error(line.into()), next)),
        b':' => Some((R::Int(count()), next)),
        b'_' => Some((R::Nil, next)),
        b'$' if count() < 0 => Some((R::Nil, next)),
        b'$' => {
            let len = count() as usize;
            if buf.len() < next + len + 2 {
                return None;
            }
            Some((R::Bulk(buf[next..next + len].to_vec()), next + len + 2))
        }
        b'*' | b'%' => {
            let items = count() * if buf[0] == b'%' { 2 } else { 1 };
            let mut at = next;
            let mut all = Vec::new();
            for _ in 0..items.max(0) {
                let (item, used) = parse(&buf[at..])?;
                all.push(item);
                at += used;
            }
            if buf[0] == b'%' {
                let mut pairs = Vec::new();
                let mut it = all.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                return Some((R::Map(pairs), at));
            }
            Some((R::Array(all), at))
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

/// A daemon with the RESP socket on, two databases (`db1` under key `k1`, `db2` under `k2`) and
/// an app token naming both.
struct Setup {
    daemon: Daemon,
    resp: PathBuf,
    app_token: String,
    app_token_id: String,
    admin: Client,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(env: &[(&str, &str)]) -> Setup {
    let mut env = env.to_vec();
    env.push(("ENVAULT_RESP_SOCKET", "resp.sock"));
    let daemon = Daemon::start_with_env(&env).await;
    let resp = daemon.dir().join("resp.sock");
    let admin = daemon.client();
    for (key, db) in [("k1", "db1"), ("k2", "db2")] {
        admin.create_key(key, None, None).await.expect("create key");
        allow_databases(&admin, key).await;
        admin
            .create_database(db, Some(key), None)
            .await
            .expect("create database");
    }
    let token: Value = admin
        .create_token("app", &["db1".to_string(), "db2".to_string()])
        .await
        .expect("create app token");
    Setup {
        resp,
        app_token: token["token"].as_str().expect("token").to_string(),
        app_token_id: token["id"].as_str().expect("id").to_string(),
        admin,
        daemon,
    }
}

#[tokio::test]
async fn authentication_and_database_selection() {
    let s = setup().await;
    let mut c = Conn::open(&s.resp).await;
    assert_eq!(c.cmd(&[b"PING"]).await, R::Simple("PONG".into()));
    assert!(c.cmd(&[b"GET", b"a"]).await.error().starts_with("NOAUTH"));
    assert!(c
        .cmd(&[b"AUTH", b"evt_wrong"])
        .await
        .error()
        .starts_with("WRONGPASS"));
    let operator = s.daemon.token.clone();
    assert!(c
        .cmd(&[b"AUTH", operator.as_bytes()])
        .await
        .error()
        .starts_with("NOPERM"));
    assert!(c
        .cmd(&[b"SELECT", b"0"])
        .await
        .error()
        .starts_with("NOAUTH"));
    assert_eq!(c.cmd(&[b"AUTH", s.app_token.as_bytes()]).await, ok());
    assert_eq!(c.cmd(&[b"SET", b"a", b"one"]).await, ok());
    // The connection started on db1, the token's first database: the socket API sees it.
    assert_eq!(s.admin.get_record("db1", "a").await.unwrap(), b"one");
    assert_eq!(c.cmd(&[b"SELECT", b"1"]).await, ok());
    assert_eq!(c.cmd(&[b"GET", b"a"]).await, R::Nil);
    assert_eq!(c.cmd(&[b"SET", b"a", b"two"]).await, ok());
    assert_eq!(s.admin.get_record("db2", "a").await.unwrap(), b"two");
    assert!(c
        .cmd(&[b"SELECT", b"2"])
        .await
        .error()
        .contains("out of range"));
    assert_eq!(c.cmd(&[b"SELECT", b"db1"]).await, ok());
    assert_eq!(c.cmd(&[b"GET", b"a"]).await, bulk(b"one"));

    // RESP3 with AUTH in HELLO; nulls and maps change form.
    let mut c3 = Conn::open(&s.resp).await;
    let hello = c3
        .cmd(&[b"HELLO", b"3", b"AUTH", b"default", s.app_token.as_bytes()])
        .await;
    let R::Map(fields) = hello else {
        panic!("HELLO 3 answers a map: {hello:?}")
    };
    assert!(fields.contains(&(bulk(b"proto"), R::Int(3))));
    assert_eq!(c3.cmd(&[b"GET", b"missing"]).await, R::Nil);
    assert_eq!(c3.buf, b"");
    assert_eq!(
        c3.cmd(&[b"AUTH", b"someone", s.app_token.as_bytes()])
            .await
            .error()
            .split(' ')
            .next(),
        Some("WRONGPASS")
    );

    // Refusals are in the activity log, never with the token.
    let denials: Vec<Value> = lifecycle_support::audit_file_events(&s.daemon)
        .into_iter()
        .filter(|e| e["action"] == "auth.denied")
        .collect();
    assert!(denials.len() >= 3, "{denials:?}");
    assert!(
        denials.iter().any(|e| e["reason"] == "forbidden"),
        "{denials:?}"
    );
    let log = std::fs::read_to_string(s.daemon.data_dir.join("audit.log")).unwrap();
    assert!(!log.contains(&s.app_token) && !log.contains(&operator));
}

#[tokio::test]
async fn commands_binary_values_and_pipelining() {
    let s = setup().await;
    let mut c = Conn::open(&s.resp).await;
    assert_eq!(
        c.cmd(&[b"AUTH", b"default", s.app_token.as_bytes()]).await,
        ok()
    );
    let binary: Vec<u8> = (0..=255u8)
        .chain(b"\r\n$3\r\n*1\r\n".iter().copied())
        .collect();
    assert_eq!(c.cmd(&[b"SET", b"bin", &binary]).await, ok());
    assert_eq!(c.cmd(&[b"GET", b"bin"]).await, bulk(&binary));
    assert_eq!(s.admin.get_record("db1", "bin").await.unwrap(), binary);
    assert_eq!(
        c.cmd(&[b"STRLEN", b"bin"]).await,
        R::Int(binary.len() as i64)
    );
    assert_eq!(c.cmd(&[b"TYPE", b"bin"]).await, R::Simple("string".into()));
    assert_eq!(c.cmd(&[b"TYPE", b"nope"]).await, R::Simple("none".into()));
    assert_eq!(c.cmd(&[b"SET", b"bin", b"x", b"NX"]).await, R::Nil);
    assert_eq!(c.cmd(&[b"SET", b"new", b"x", b"XX"]).await, R::Nil);
    assert_eq!(c.cmd(&[b"SET", b"new", b"x", b"NX"]).await, ok());
    assert_eq!(c.cmd(&[b"SET", b"new", b"y", b"GET"]).await, bulk(b"x"));
    assert_eq!(c.cmd(&[b"GETDEL", b"new"]).await, bulk(b"y"));
    assert_eq!(c.cmd(&[b"GETDEL", b"new"]).await, R::Nil);
    assert!(c
        .cmd(&[b"SET", b"t", b"v", b"EX", b"10"])
        .await
        .error()
        .contains("no expiry"));
    assert!(c
        .cmd(&[b"FLUSHALL"])
        .await
        .error()
        .starts_with("ERR unknown command"));
    assert!(c.cmd(&[b"GET", b"a\nb"]).await.error().contains("control"));
    assert_eq!(c.cmd(&[b"MSET", b"m1", b"1", b"m2", b"2"]).await, ok());
    assert_eq!(
        c.cmd(&[b"MGET", b"m1", b"zz", b"m2"]).await,
        R::Array(vec![bulk(b"1"), R::Nil, bulk(b"2")])
    );
    assert_eq!(c.cmd(&[b"EXISTS", b"m1", b"m2", b"zz"]).await, R::Int(2));
    assert_eq!(c.cmd(&[b"DEL", b"m1", b"zz"]).await, R::Int(1));
    assert_eq!(c.cmd(&[b"UNLINK", b"m2"]).await, R::Int(1));
    assert_eq!(c.cmd(&[b"DBSIZE"]).await, R::Int(1));

    // 300 pipelined commands in one write: answered in order, writes visible to later reads.
    let keys: Vec<String> = (0..100).map(|i| format!("p:{i:03}")).collect();
    let values: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("value {i}").into_bytes())
        .collect();
    let mut commands: Vec<Vec<&[u8]>> = Vec::new();
    for (key, value) in keys.iter().zip(&values) {
        commands.push(vec![b"SET", key.as_bytes(), value]);
        commands.push(vec![b"GET", key.as_bytes()]);
        commands.push(vec![b"SET", key.as_bytes(), b"last"]);
    }
    let replies = c.pipeline(&commands).await;
    for (i, value) in values.iter().enumerate() {
        assert_eq!(replies[3 * i], ok());
        assert_eq!(replies[3 * i + 1], bulk(value));
        assert_eq!(replies[3 * i + 2], ok());
    }
    assert_eq!(s.admin.get_record("db1", "p:042").await.unwrap(), b"last");

    // SCAN walks every key once, with MATCH and a small COUNT.
    let mut cursor = b"0".to_vec();
    let mut seen = Vec::new();
    loop {
        let R::Array(reply) = c
            .cmd(&[b"SCAN", &cursor, b"MATCH", b"p:0[0-4]*", b"COUNT", b"7"])
            .await
        else {
            panic!("SCAN answers an array")
        };
        let (R::Bulk(next), R::Array(page)) = (&reply[0], &reply[1]) else {
            panic!("{reply:?}")
        };
        seen.extend(page.iter().map(|k| match k {
            R::Bulk(k) => String::from_utf8(k.clone()).unwrap(),
            _ => panic!(),
        }));
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen, keys[..50].to_vec());
    let R::Bulk(info) = c.cmd(&[b"INFO", b"keyspace"]).await else {
        panic!("INFO is text")
    };
    assert!(String::from_utf8_lossy(&info).contains("db0:keys=101"));
    assert_eq!(c.cmd(&[b"CLIENT", b"SETNAME", b"tester"]).await, ok());
    assert_eq!(c.cmd(&[b"CLIENT", b"GETNAME"]).await, bulk(b"tester"));
    assert_eq!(c.cmd(&[b"QUIT"]).await, ok());
}

#[tokio::test]
async fn key_state_and_revocation_reach_open_connections() {
    let s = setup().await;
    let mut c = Conn::open(&s.resp).await;
    assert_eq!(c.cmd(&[b"AUTH", s.app_token.as_bytes()]).await, ok());
    assert_eq!(c.cmd(&[b"SET", b"r", b"secret-value"]).await, ok());

    s.admin.disable_key("k1").await.expect("disable k1");
    let err = c.cmd(&[b"GET", b"r"]).await;
    assert!(err.error().starts_with("KEYSUSPENDED"), "{err:?}");
    assert!(c
        .cmd(&[b"SET", b"r", b"secret-value"])
        .await
        .error()
        .starts_with("KEYSUSPENDED"));
    s.admin.enable_key("k1").await.expect("enable k1");
    assert_eq!(c.cmd(&[b"GET", b"r"]).await, bulk(b"secret-value"));

    // Shred db2's key while the connection is on db2.
    assert_eq!(c.cmd(&[b"SELECT", b"1"]).await, ok());
    assert_eq!(c.cmd(&[b"SET", b"s", b"secret-value"]).await, ok());
    s.admin.delete_key("k2", true).await.expect("shred k2");
    let err = c.cmd(&[b"GET", b"s"]).await;
    assert!(err.error().starts_with("KEYDESTROYED"), "{err:?}");
    assert!(!err.error().contains("secret-value"));

    assert_eq!(c.cmd(&[b"SELECT", b"0"]).await, ok());
    s.admin
        .delete_database("db1")
        .await
        .expect("soft-delete db1");
    let err = c.cmd(&[b"MGET", b"r", b"x"]).await;
    assert!(err.error().starts_with("DBDELETED"), "{err:?}");

    s.admin.revoke_token(&s.app_token_id).await.expect("revoke");
    let err = c.cmd(&[b"GET", b"r"]).await;
    assert!(err.error().starts_with("NOPERM"), "{err:?}");
    assert!(c
        .cmd(&[b"AUTH", s.app_token.as_bytes()])
        .await
        .error()
        .starts_with("WRONGPASS"));
    let denied: Vec<Value> = lifecycle_support::audit_file_events(&s.daemon)
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert!(
        denied.iter().any(|e| e["reason"] == "key_suspended"),
        "{denied:?}"
    );
    assert!(
        denied.iter().any(|e| e["reason"] == "key_destroyed"),
        "{denied:?}"
    );
    assert!(
        denied.iter().any(|e| e["reason"] == "database_deleted"),
        "{denied:?}"
    );
    assert!(!s.daemon.log().contains("secret-value"));
}

#[tokio::test]
async fn protocol_errors_close_and_the_socket_is_private() {
    let s = setup().await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&s.resp).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the RESP socket gets socket_mode");
    let mut c = Conn::open(&s.resp).await;
    // A bulk longer than the largest value is refused before it is buffered.
    c.stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999999\r\n")
        .await
        .unwrap();
    assert!(c.reply().await.error().contains("Protocol error"));
    let mut rest = Vec::new();
    let n = c.stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(n, 0, "the connection is closed after a protocol error");
    // Inline commands work (telnet-style).
    let mut c = Conn::open(&s.resp).await;
    c.stream.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(c.reply().await, R::Simple("PONG".into()));
}

#[tokio::test]
async fn value_limit_and_pipelined_reads_past_it() {
    let s = setup_with(&[("ENVAULT_MAX_RECORD_SIZE", "1KiB")]).await;
    let mut c = Conn::open(&s.resp).await;
    assert_eq!(c.cmd(&[b"AUTH", s.app_token.as_bytes()]).await, ok());
    let value = vec![b'v'; 1000];
    assert_eq!(
        c.cmd(&[b"MSET", b"a", &value, b"b", &value, b"c", &value])
            .await,
        ok()
    );
    // Three pipelined reads of 1000 bytes each: more than one batch answers (1 KiB), all
    // answered with their values.
    let replies = c
        .pipeline(&[vec![b"GET", b"a"], vec![b"GET", b"b"], vec![b"GET", b"c"]])
        .await;
    assert_eq!(replies, vec![bulk(&value), bulk(&value), bulk(&value)]);
    assert_eq!(
        c.cmd(&[b"MGET", b"a", b"b"]).await,
        R::Array(vec![bulk(&value), bulk(&value)])
    );
    // A value over the limit is refused before it is read, and the connection closed.
    let big = vec![b'x'; 1025];
    let err = c.cmd(&[b"SET", b"big", &big]).await;
    assert!(err.error().contains("invalid bulk length"), "{err:?}");
    let mut c = Conn::open(&s.resp).await;
    assert_eq!(c.cmd(&[b"AUTH", s.app_token.as_bytes()]).await, ok());
    assert_eq!(c.cmd(&[b"EXISTS", b"big"]).await, R::Int(0));
}
