#!/usr/bin/env python3
"""A Kubernetes KMS v2 client over a Unix socket, generated with grpcio-tools from the same
proto/k8s.io/kms/apis/v2/api.proto the plugin is built from.

Usage: kms_v2_client.py GEN_DIR SOCKET COMMAND [ARGS]
  status
  encrypt PLAINTEXT_HEX
  decrypt CIPHERTEXT_HEX KEY_ID [ANNOTATION_KEY=VALUE_HEX ...]
  bench SECONDS   (Encrypt, then Decrypt, of a 32-byte DEK in a loop; ops/s of each)

Prints one JSON object: {"ok": true, ...fields} or {"ok": false, "code": NAME, "details": TEXT}.
Exits non-zero only when the client itself cannot run (missing grpcio or grpcio-tools).
"""

import json
import os
import pathlib
import shutil
import sys
import time

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTO = "k8s.io/kms/apis/v2/api.proto"


def stubs(gen_dir):
    """Generates api_pb2 / api_pb2_grpc from the repository's api.proto (copied flat, so the
    modules import by plain name) and imports them."""
    gen = pathlib.Path(gen_dir)
    if not (gen / "api_pb2_grpc.py").exists():
        gen.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROTO_ROOT / PROTO, gen / "api.proto")
        code = protoc.main([
            "grpc_tools.protoc",
            f"-I{gen}",
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            str(gen / "api.proto"),
        ])
        if code != 0:
            sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, str(gen))
    import api_pb2
    import api_pb2_grpc

    return api_pb2, api_pb2_grpc


def main():
    gen_dir, socket, command, *args = sys.argv[1:]
    pb2, pb2_grpc = stubs(gen_dir)
    # grpc-python sends the percent-escaped socket path as :authority, which h2 (under tonic)
    # refuses as a malformed authority; the API server's Go client sends "localhost" for
    # unix sockets, so the test client does the same.
    channel = grpc.insecure_channel(
        f"unix://{socket}", options=[("grpc.default_authority", "localhost")]
    )
    stub = pb2_grpc.KeyManagementServiceStub(channel)
    try:
        if command == "status":
            r = stub.Status(pb2.StatusRequest(), timeout=10)
            out = {"version": r.version, "healthz": r.healthz, "key_id": r.key_id}
        elif command == "encrypt":
            r = stub.Encrypt(
                pb2.EncryptRequest(plaintext=bytes.fromhex(args[0]), uid="test"), timeout=10
            )
            out = {
                "ciphertext": r.ciphertext.hex(),
                "key_id": r.key_id,
                "annotations": {k: v.hex() for k, v in r.annotations.items()},
            }
        elif command == "decrypt":
            annotations = {}
            for pair in args[2:]:
                key, value = pair.split("=", 1)
                annotations[key] = bytes.fromhex(value)
            r = stub.Decrypt(
                pb2.DecryptRequest(
                    ciphertext=bytes.fromhex(args[0]),
                    key_id=args[1],
                    uid="test",
                    annotations=annotations,
                ),
                timeout=10,
            )
            out = {"plaintext": r.plaintext.hex()}
        elif command == "bench":
            seconds = float(args[0])
            dek = os.urandom(32)
            n, start = 0, time.monotonic()
            last = None
            while time.monotonic() - start < seconds:
                last = stub.Encrypt(pb2.EncryptRequest(plaintext=dek, uid="b"), timeout=10)
                n += 1
            enc_rate = n / (time.monotonic() - start)
            n, start = 0, time.monotonic()
            while time.monotonic() - start < seconds:
                stub.Decrypt(
                    pb2.DecryptRequest(ciphertext=last.ciphertext, key_id=last.key_id, uid="b"),
                    timeout=10,
                )
                n += 1
            out = {"encrypt_ops": enc_rate, "decrypt_ops": n / (time.monotonic() - start)}
        else:
            sys.exit(f"unknown command {command}")
        out["ok"] = True
    except grpc.RpcError as err:
        out = {"ok": False, "code": err.code().name, "details": err.details()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
