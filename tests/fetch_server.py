"""A loopback HTTP server of benign generated images, for fetch tests and bench/fetch.py.

Every image carries MARKER (a JPEG comment, a PNG tEXt chunk), so a test can search
every file a scan wrote for image bytes. asyncio, so that ten thousand slow requests in
flight cost no thread each. Routes (`<n>` picks the image):

    /img/<n>.jpg           a JPEG            /png/<n>.png        a PNG
    /redirect/<k>/<n>      k redirects, then /img/<n>.jpg
    /loop                  redirects to itself
    /status/<code>         that status, no body
    /flaky/<id>/<n>        500 on the first request for <id>, then the image
    /ratelimit/<id>/<n>    429 with Retry-After: 1 on the first request, then the image
    /slow/<n>              the image after SLOW_SECONDS
    /big                   a body of BIG_BYTES with its Content-Length
    /big-chunked           the same, chunked (no Content-Length)
    /html                  an HTML page;     /mislabelled/<n>   a JPEG sent as text/plain
    /truncated/<n>         Content-Length of the JPEG, half its bytes, then closed
    /noai/<n>, /noimageai/<n>, /otherbot-noai/<n>   the image with an X-Robots-Tag
    /stats                 requests served and the most ever in flight, as JSON

Run as a script it serves on a port it prints: `python tests/fetch_server.py --delay-ms 100`
(`--warm N` makes images 0..N-1 before it prints, so that no request pays for one).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import random
import threading
from collections import Counter
from typing import Any

from PIL import Image, PngImagePlugin

MARKER = b"CLEARSET-TEST-MARKER"
SLOW_SECONDS = 4.0
BIG_BYTES = 3 * 1024 * 1024
SIDE = 48


@functools.lru_cache(maxsize=65536)
def jpeg(n: int) -> bytes:
    image = _picture(n)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85, comment=MARKER + b"-%d" % n)
    return buffer.getvalue()


@functools.lru_cache(maxsize=1024)
def png(n: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("marker", (MARKER + b"-%d" % n).decode())
    buffer = io.BytesIO()
    _picture(n).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _picture(n: int) -> Image.Image:
    rng = random.Random(n)
    # Blocks of colour: benign, distinct per n, with enough structure for a good PDQ.
    cells = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(16)]
    small = Image.new("RGB", (4, 4))
    small.putdata(cells)  # type: ignore[arg-type]
    return small.resize((SIDE, SIDE), Image.Resampling.BILINEAR)


class Handler:
    """The routes, with counters a test can read."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.hits: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def respond(self, path: str, headers: dict[str, str], writer: Any) -> bool:
        """Write the response to `path`; False when the connection must be closed."""
        self.hits[path] += 1
        self.user_agents.add(headers.get("user-agent", ""))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay and not path.startswith("/stats"):
                await asyncio.sleep(self.delay)
            return await self._route(path, writer)
        finally:
            self.in_flight -= 1

    async def _route(self, path: str, writer: Any) -> bool:
        parts = path.split("?", 1)[0].strip("/").split("/")
        head, rest = parts[0], parts[1:]

        def number(text: str) -> int:
            return int(text.split(".", 1)[0])

        if head == "stats":
            counts = {"requests": sum(self.hits.values()), "max_in_flight": self.max_in_flight}
            self.hits[path] -= 1  # not a request for an image
            return _send(writer, 200, json.dumps(counts).encode(), "application/json")
        if head == "img":
            return _send(writer, 200, jpeg(number(rest[0])), "image/jpeg")
        if head == "png":
            return _send(writer, 200, png(number(rest[0])), "image/png")
        if head == "redirect":
            left = int(rest[0])
            target = f"/redirect/{left - 1}/{rest[1]}" if left > 1 else f"/img/{rest[1]}.jpg"
            return _send(writer, 302, b"", "text/plain", {"Location": target})
        if head == "loop":
            return _send(writer, 302, b"", "text/plain", {"Location": "/loop"})
        if head == "status":
            return _send(writer, int(rest[0]), b"", "text/plain")
        if head in ("flaky", "ratelimit"):
            first = self.hits[path] == 1
            if first and head == "flaky":
                return _send(writer, 500, b"", "text/plain")
            if first:
                return _send(writer, 429, b"", "text/plain", {"Retry-After": "1"})
            return _send(writer, 200, jpeg(number(rest[1])), "image/jpeg")
        if head == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            return _send(writer, 200, jpeg(number(rest[0])), "image/jpeg")
        if head == "big":
            return _send(writer, 200, b"\0" * BIG_BYTES, "image/jpeg")
        if head == "big-chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            block = b"\0" * 65536
            for _ in range(BIG_BYTES // len(block)):
                writer.write(b"%x\r\n%s\r\n" % (len(block), block))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return False
        if head == "html":
            return _send(writer, 200, b"<html><body>not an image</body></html>", "text/html")
        if head == "mislabelled":
            return _send(writer, 200, jpeg(number(rest[0])), "text/plain")
        if head == "truncated":
            body = jpeg(number(rest[0]))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                % len(body)
            )
            writer.write(body[: len(body) // 2])
            await writer.drain()
            return False
        if head in ("noai", "noimageai", "otherbot-noai"):
            tag = {"noai": "noai", "noimageai": "noindex, noimageai"}.get(head, "otherbot: noai")
            return _send(writer, 200, jpeg(number(rest[0])), "image/jpeg", {"X-Robots-Tag": tag})
        return _send(writer, 404, b"", "text/plain")


_REASONS = {200: "OK", 302: "Found", 404: "Not Found", 429: "Too Many Requests"}


def _send(
    writer: Any, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> bool:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return True


async def _connection(handler: Handler, reader: Any, writer: Any) -> None:
    try:
        while True:
            request = await reader.readline()
            if not request:
                break
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            path = request.decode("latin-1").split(" ")[1]
            keep = await handler.respond(path, headers, writer)
            await writer.drain()
            if not keep:
                break
    except (ConnectionError, IndexError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class LoopbackServer:
    """The server on a background thread, for tests: `with LoopbackServer() as s: s.url(...)`."""

    def __init__(self, delay: float = 0.0) -> None:
        self.handler = Handler(delay)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(10)
        return self

    async def _start(self) -> int:
        self._server = await asyncio.start_server(
            functools.partial(_connection, self.handler), "127.0.0.1", 0, backlog=4096
        )
        return int(self._server.sockets[0].getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


#: Listening sockets sharing the port (SO_REUSEPORT): each has the kernel's backlog cap
#: (somaxconn, often 4096), and ten thousand connections may arrive at once.
LISTENERS = 4


async def _serve(port: int, delay: float) -> None:
    handler = Handler(delay)
    serve = functools.partial(_connection, handler)
    first = await asyncio.start_server(serve, "127.0.0.1", port, backlog=65535, reuse_port=True)
    port = first.sockets[0].getsockname()[1]
    others = [
        await asyncio.start_server(serve, "127.0.0.1", port, backlog=65535, reuse_port=True)
        for _ in range(LISTENERS - 1)
    ]
    print(port, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in (first, *others)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--warm", type=int, default=0)
    args = parser.parse_args()
    for n in range(args.warm):
        jpeg(n)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_serve(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
