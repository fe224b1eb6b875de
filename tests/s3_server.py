"""A real S3 API on loopback for the object-store tests: moto's server mode (the server
s3fs's own test suite runs against), started once per test session in a thread, and a
small proxy in front of it that counts requests, can fail a share of them, and refuses an
unknown access key as S3 does (moto's server accepts any).

Why moto and not Ceph's radosgw: it is a pip wheel (no system packages, no root), starts
in well under a second, and answers the calls clearset makes (PUT, multipart uploads and
their abort, paged ListObjectsV2, conditional PUT with If-None-Match: * answering 412).
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class FaultProxy:
    """Forwards HTTP requests to `upstream`; counts them by method, and answers every
    `fail_every`-th one with 503 SlowDown (S3's own "retry me") without forwarding it.
    `seen` keeps (method, path and query) of each request counted, to find where they
    come from."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fail_every = 0
        self.counts: dict[str, int] = {}
        self.seen: list[tuple[str, str]] = []
        self.failed = 0
        self._seen = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy._seen += 1
                    fail = proxy.fail_every and proxy._seen % proxy.fail_every == 0
                    if fail:
                        proxy.failed += 1
                    else:
                        proxy.counts[self.command] = proxy.counts.get(self.command, 0) + 1
                        proxy.seen.append((self.command, self.path))
                auth = self.headers.get("Authorization") or ""
                if auth and f"Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/" not in auth:
                    # moto's server takes any key; S3 refuses an unknown one, so this does.
                    payload = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId"
                        b"</Code><Message>The AWS Access Key Id you provided does not exist in "
                        b"our records.</Message></Error>"
                    )
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fail:
                    payload = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(LOOPBACK, proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{LOOPBACK}:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status, answer.reason)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                # a HEAD's length is the object's, not its (empty) body's
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts, self.failed, self._seen = {}, 0, 0
            self.seen = []

    def close(self) -> None:
        self.server.shutdown()


class S3Server:
    """moto on loopback, its proxy, and the environment that points s3fs at them."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.moto_port = free_port()
        self.moto = ThreadedMotoServer(ip_address=LOOPBACK, port=self.moto_port, verbose=False)
        self.moto.start()
        self.proxy = FaultProxy(self.moto_port)
        self.endpoint = f"http://{LOOPBACK}:{self.proxy.port}"
        self.env = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def make_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://{LOOPBACK}:{self.moto_port}",
                              **_boto_credentials())  # fmt: skip
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def close(self) -> None:
        self.proxy.close()
        self.moto.stop()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@contextmanager
def s3_environment(server: S3Server) -> Iterator[None]:
    """Point this process's s3fs (and the processes it starts) at the test server."""
    before = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    _forget_filesystems()
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _forget_filesystems()


def _forget_filesystems() -> None:
    import s3fs

    from clearset import storage

    s3fs.S3FileSystem.clear_instance_cache()
    storage._stores.clear()
