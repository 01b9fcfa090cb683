#!/usr/bin/env python3
"""One scripted transit session through the real `hvac` client.

Usage: transit_session.py URL TOKEN KEY SERVER
  URL: http://127.0.0.1:PORT, or unix:///path/to/socket (sent through requests-unixsocket).
  SERVER: envault | openbao. The one deliberate difference: OpenBao reads `vault:v0:` as v1
  (compatibility with its first releases); envault refuses v0 (no key version 0 exists), step `bad_v0`.

Asserts the session's results (round trips, rotation, rewrap, data keys, bad ciphertexts,
associated data) and prints one JSON object {step: shape} on stdout, where a shape keeps the
keys and value types of each response and drops the values, so the caller can compare two
servers (envault and a real OpenBao) response by response. Exits non-zero on any failure,
including a missing module: nothing here is optional.
"""

import base64
import json
import sys
import urllib.parse

import hvac
import hvac.exceptions
import requests_unixsocket


def shape(value):
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if value is None:
        return "null"
    return type(value).__name__


def client(url, token):
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        return hvac.Client(
            url="http+unix://" + urllib.parse.quote(path, safe=""),
            token=token,
            session=requests_unixsocket.Session(),
        )
    return hvac.Client(url=url, token=token)


def b64(data):
    return base64.b64encode(data).decode()


def main():
    url, token, key, server = sys.argv[1:5]
    assert server in ("envault", "openbao"), server
    transit = client(url, token).secrets.transit
    shapes = {}

    def record(step, response):
        # hvac returns the parsed JSON body, or the raw response for 204 No Content.
        if isinstance(response, dict):
            shapes[step] = shape(response)
        else:
            shapes[step] = {"status": response.status_code}
        return response

    def expect_error(step, exc_type, call, needle=None):
        try:
            call()
        except exc_type as exc:
            shapes[step] = {"error_type": exc_type.__name__, "errors": shape(exc.errors)}
            if needle is not None:
                text = " ".join(exc.errors or [])
                assert needle in text, f"{step}: {needle!r} not in {text!r}"
            return
        raise AssertionError(f"{step}: expected {exc_type.__name__}")

    record("create", transit.create_key(name=key))
    read = record("read", transit.read_key(name=key))
    assert read["data"]["latest_version"] == 1, read
    assert read["data"]["type"] == "aes256-gcm96", read

    secret = b"the quick brown fox"
    enc = record("encrypt", transit.encrypt_data(name=key, plaintext=b64(secret)))
    ct1 = enc["data"]["ciphertext"]
    assert ct1.startswith("vault:v1:"), ct1
    dec = record("decrypt", transit.decrypt_data(name=key, ciphertext=ct1))
    assert base64.b64decode(dec["data"]["plaintext"]) == secret

    ad = b64(b"tenant-7")
    enc_ad = transit.encrypt_data(name=key, plaintext=b64(secret), associated_data=ad)
    ct_ad = enc_ad["data"]["ciphertext"]
    dec_ad = transit.decrypt_data(name=key, ciphertext=ct_ad, associated_data=ad)
    assert base64.b64decode(dec_ad["data"]["plaintext"]) == secret
    expect_error(
        "decrypt_wrong_ad",
        hvac.exceptions.InvalidRequest,
        lambda: transit.decrypt_data(name=key, ciphertext=ct_ad, associated_data=b64(b"x")),
    )

    batch = record(
        "encrypt_batch",
        transit.encrypt_data(
            name=key,
            batch_input=[{"plaintext": b64(b"one")}, {"plaintext": b64(b"two")}],
        ),
    )
    cts = [r["ciphertext"] for r in batch["data"]["batch_results"]]
    decs = record(
        "decrypt_batch",
        transit.decrypt_data(name=key, batch_input=[{"ciphertext": c} for c in cts]),
    )
    plain = [base64.b64decode(r["plaintext"]) for r in decs["data"]["batch_results"]]
    assert plain == [b"one", b"two"], plain

    rot = record("rotate", transit.rotate_key(name=key))
    if isinstance(rot, dict):  # OpenBao answers the key; older Vaults answer 204
        assert rot["data"]["latest_version"] == 2, rot
    assert transit.read_key(name=key)["data"]["latest_version"] == 2
    old = transit.decrypt_data(name=key, ciphertext=ct1)
    assert base64.b64decode(old["data"]["plaintext"]) == secret
    rew = record("rewrap", transit.rewrap_data(name=key, ciphertext=ct1))
    ct2 = rew["data"]["ciphertext"]
    assert ct2.startswith("vault:v2:"), ct2
    again = transit.decrypt_data(name=key, ciphertext=ct2)
    assert base64.b64decode(again["data"]["plaintext"]) == secret

    dk = record("datakey_plaintext", transit.generate_data_key(name=key, key_type="plaintext"))
    dek = base64.b64decode(dk["data"]["plaintext"])
    assert len(dek) == 32, len(dek)
    opened = transit.decrypt_data(name=key, ciphertext=dk["data"]["ciphertext"])
    assert base64.b64decode(opened["data"]["plaintext"]) == dek
    wrapped = record(
        "datakey_wrapped", transit.generate_data_key(name=key, key_type="wrapped", bits=512)
    )
    assert "plaintext" not in wrapped["data"], wrapped
    opened = transit.decrypt_data(name=key, ciphertext=wrapped["data"]["ciphertext"])
    assert len(base64.b64decode(opened["data"]["plaintext"])) == 64

    for step, bad in [
        ("bad_prefix", "nope:v1:" + ct1.split(":")[2]),
        ("bad_too_new", "vault:v9:" + ct1.split(":")[2]),
        ("bad_base64", "vault:v1:!!!!"),
        ("bad_short", "vault:v1:" + b64(b"short")),
    ]:
        expect_error(
            step,
            hvac.exceptions.InvalidRequest,
            lambda bad=bad: transit.decrypt_data(name=key, ciphertext=bad),
        )

    v0 = "vault:v0:" + ct1.split(":")[2]
    if server == "envault":
        expect_error(
            "bad_v0",
            hvac.exceptions.InvalidRequest,
            lambda: transit.decrypt_data(name=key, ciphertext=v0),
            needle="version 0",
        )
    else:
        transit.decrypt_data(name=key, ciphertext=v0)

    cfg = record(
        "config",
        transit.update_key_configuration(name=key, min_decryption_version=2),
    )
    if isinstance(cfg, dict):
        assert cfg["data"]["min_decryption_version"] == 2, cfg
    expect_error(
        "bad_too_old",
        hvac.exceptions.InvalidRequest,
        lambda: transit.decrypt_data(name=key, ciphertext=ct1),
    )
    expect_error(
        "delete_not_allowed",
        hvac.exceptions.InvalidRequest,
        lambda: transit.delete_key(name=key),
        needle="deletion is not allowed",
    )
    transit.update_key_configuration(name=key, deletion_allowed=True)
    record("delete", transit.delete_key(name=key))
    expect_error(
        "decrypt_after_delete",
        hvac.exceptions.InvalidRequest,
        lambda: transit.decrypt_data(name=key, ciphertext=ct2),
    )
    expect_error(
        "read_missing",
        hvac.exceptions.InvalidPath,
        lambda: transit.read_key(name=key + "-missing"),
    )
    json.dump(shapes, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
