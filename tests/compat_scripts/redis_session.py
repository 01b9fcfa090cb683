"""redis-py against envault's Redis-protocol socket (driven by tests/suite/resp_clients.rs).

usage: redis_session.py SOCKET TOKEN session
       redis_session.py SOCKET TOKEN error DB KEY

`session` runs every supported command through redis-py (RESP2 and RESP3), pipelines,
binary values and a connection pool, asserting each answer, and prints a JSON summary.
`error` reads KEY in database DB (by index) and prints the error redis-py raised, as JSON.
"""

import json
import sys
import threading

import redis


def client(sock, token, **kw):
    return redis.Redis(unix_socket_path=sock, password=token, **kw)


def session(sock, token):
    out = {}
    r = client(sock, token)
    assert r.ping() is True
    assert r.echo(b"hi") == b"hi"
    binary = bytes(range(256)) + b"\r\n$-1\r\n"
    assert r.set("bin", binary) is True
    assert r.get("bin") == binary
    assert r.strlen("bin") == len(binary)
    assert r.type("bin") == b"string"
    assert r.type("none") == b"none"
    assert r.get("missing") is None
    assert r.set("bin", b"x", nx=True) is None
    assert r.set("fresh", b"x", xx=True) is None
    assert r.set("fresh", b"1", nx=True) is True
    assert r.set("fresh", b"2", get=True) == b"1"
    assert r.getdel("fresh") == b"2"
    assert r.exists("fresh") == 0
    assert r.mset({"a": b"1", "b": b"2", "c": b"3"}) is True
    assert r.mget(["a", "zz", "c"]) == [b"1", None, b"3"]
    assert r.exists("a", "b", "zz") == 2
    assert r.delete("a", "zz") == 1
    assert r.unlink("b") == 1
    try:
        r.set("t", b"v", ex=10)
        raise AssertionError("SET EX must be refused")
    except redis.ResponseError as e:
        out["set_ex"] = str(e)
    try:
        r.execute_command("FLUSHALL")
        raise AssertionError("FLUSHALL must be unknown")
    except redis.ResponseError as e:
        out["unknown"] = str(e)
    assert r.client_setname("py") is True
    assert r.client_getname() == "py" or r.client_getname() == b"py"
    out["client_id"] = r.client_id()
    out["client_info_db"] = r.client_info()["db"]
    out["command_count"] = r.command_count()
    out["config_appendonly"] = r.config_get("appendonly")
    info = r.info()
    out["redis_version"] = info["redis_version"]

    # A pipeline (no MULTI): answers in order, the write visible to the read after it.
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"p:{i:03}", f"v{i}".encode())
        pipe.get(f"p:{i:03}")
    answers = pipe.execute()
    assert answers[0::2] == [True] * 200
    assert answers[1::2] == [f"v{i}".encode() for i in range(200)]
    assert r.dbsize() == 202, r.dbsize()  # p:*, bin and c
    keys = sorted(r.scan_iter(match="p:1*", count=17))
    assert keys == [f"p:{i:03}".encode() for i in range(100, 200)], keys[:5]
    assert r.info("keyspace")["db0"]["keys"] == 202

    # db=1: the token's second database, empty.
    r2 = client(sock, token, db=1)
    assert r2.get("bin") is None
    assert r2.set("other", b"in db2") is True
    assert r.get("other") is None

    # RESP3 with HELLO 3 AUTH.
    r3 = client(sock, token, protocol=3)
    assert r3.get("bin") == binary
    assert r3.get("missing") is None
    out["hello_proto"] = r3.connection_pool.get_connection().handshake_metadata.get(b"proto")

    # A pool shared by threads: every write lands, each read sees its own write.
    pool = redis.ConnectionPool(
        connection_class=redis.UnixDomainSocketConnection,
        path=sock,
        password=token,
        max_connections=8,
    )
    errors = []

    def worker(n):
        c = redis.Redis(connection_pool=pool)
        try:
            for i in range(25):
                key = f"pool:{n}:{i}"
                c.set(key, key.encode())
                assert c.get(key) == key.encode()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(list(r.scan_iter(match="pool:*", count=1000))) == 200
    out["pool_connections"] = len(pool._available_connections) + len(pool._in_use_connections)

    # Wrong token.
    try:
        client(sock, "evt_not-a-token").ping()
        raise AssertionError("a wrong token must be refused")
    except redis.AuthenticationError as e:
        out["wrong_token"] = str(e)
    out["ok"] = True
    print(json.dumps(out, default=lambda v: v.decode() if isinstance(v, bytes) else str(v)))


def error(sock, token, db, key):
    r = client(sock, token, db=int(db))
    try:
        value = r.get(key)
        print(json.dumps({"error": None, "value_len": None if value is None else len(value)}))
    except redis.RedisError as e:
        print(json.dumps({"error": str(e), "class": type(e).__name__}))


if __name__ == "__main__":
    sock, token, what = sys.argv[1:4]
    if what == "session":
        session(sock, token)
    else:
        error(sock, token, *sys.argv[4:6])
