"""Fetch images over HTTP into memory, politely, and keep nothing.

`fetch_stream(urls, settings)` downloads a run of URLs with one asyncio loop on a
background thread (aiohttp), and yields each URL's `Fetched` as it completes: the body's
bytes, held only until the caller has hashed them, and what the server answered. Bodies
are never written anywhere. Politeness: at most `concurrency` requests in flight, at
most `per_host` of them to any one host (over every worker process on this machine:
`clearset.formats.fetching.host_slots`), retries with exponential backoff on 429, 5xx
and transport errors (honouring `Retry-After`, up to a cap), connect and read timeouts,
a body-size cap (a larger body is refused as soon as its `Content-Length` or its bytes
say so, never buffered whole), a configurable User-Agent, and `X-Robots-Tag: noai` /
`noimageai` respected as img2dataset respects them (the body is not read) and recorded.

Memory: fetched bodies wait for the caller to take them, and a new request starts only
when one is taken, so at most `concurrency` bodies (each at most `max_bytes`) are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from clearset import __version__
from clearset.formats.fetching.host_slots import host_slots

#: Requests in flight per worker process.
FETCH_CONCURRENCY = 64
#: Requests in flight to one host, over every worker on one machine (politeness).
FETCH_PER_HOST = 16
FETCH_CONNECT_TIMEOUT = 10.0
#: Longest wait for the next bytes of a response (not for the whole body).
FETCH_READ_TIMEOUT = 30.0
#: Tries after the first, on 429, 5xx and transport errors.
FETCH_RETRIES = 2
#: First wait before a retry, doubled on each further retry (when no Retry-After).
FETCH_BACKOFF = 1.0
#: Longest `Retry-After` honoured; a longer one is waited for this long.
FETCH_MAX_RETRY_AFTER = 60.0
#: Largest body held in memory; larger ones are refused and recorded.
FETCH_MAX_BYTES = 32 * 1024 * 1024
FETCH_MAX_REDIRECTS = 10
#: The token an `X-Robots-Tag: <token>: noai` directive may address to us.
USER_AGENT_TOKEN = "clearset"
FETCH_USER_AGENT = f"clearset/{__version__} (dataset safety scan; {USER_AGENT_TOKEN})"
#: X-Robots-Tag directives that forbid using an image for AI (img2dataset's own two).
NOAI_DIRECTIVES = frozenset({"noai", "noimageai"})

_CHUNK = 1 << 16
#: How often a full loop looks whether the caller has taken results (frees slots).
_POLL_SECONDS = 0.002


@dataclass(frozen=True)
class FetchSettings:
    """How to fetch: recorded in run.json with the source."""

    concurrency: int = FETCH_CONCURRENCY
    per_host: int = FETCH_PER_HOST
    connect_timeout: float = FETCH_CONNECT_TIMEOUT
    read_timeout: float = FETCH_READ_TIMEOUT
    retries: int = FETCH_RETRIES
    backoff: float = FETCH_BACKOFF
    max_retry_after: float = FETCH_MAX_RETRY_AFTER
    max_bytes: int = FETCH_MAX_BYTES
    max_redirects: int = FETCH_MAX_REDIRECTS
    user_agent: str = FETCH_USER_AGENT
    respect_noai: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Fetched:
    """One URL's outcome. `data` is None when the fetch failed: `reason` says why, its
    first word the kind (`http_404`, `timeout`, `noai`...) that scan summaries count by."""

    index: int
    url: str
    data: bytes | None = None
    reason: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    final_url: str | None = None
    attempts: int = 0
    fetch_ms: int | None = None
    first_byte_ms: int | None = None
    noai: bool | None = None

    def columns(self) -> dict[str, Any]:
        """The manifest's fetch columns."""
        return {
            "http_status": self.http_status,
            "content_type": self.content_type,
            "final_url": self.final_url,
            "fetch_attempts": self.attempts,
            "fetch_ms": self.fetch_ms,
            "first_byte_ms": self.first_byte_ms,
            "noai": self.noai,
        }


def disallows_ai(values: Sequence[str], token: str = USER_AGENT_TOKEN) -> bool:
    """Whether X-Robots-Tag header values forbid AI use: `noai` or `noimageai`, for
    every agent or addressed to `token` (`clearset: noai`). Other agents' lines do not
    bind us; an unparsable value is treated as no directive, as img2dataset does."""
    for value in values:
        agent, sep, rest = value.partition(":")
        directives = rest if sep and " " not in agent.strip() else value
        addressed = agent.strip().lower() if sep and " " not in agent.strip() else None
        if addressed not in (None, token.lower()):
            continue
        if any(d.strip().lower() in NOAI_DIRECTIVES for d in directives.split(",")):
            return True
    return False


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) as seconds, capped; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


def url_host(url: str) -> str | None:
    """The host (and port) an http(s) URL names, lower case; None for any other URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class _Fail(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Fetcher:
    """The async side: one aiohttp session, a global and a per-host limit.

    aiohttp rather than httpx: on a loopback server httpx's connection pool fetched
    ~140 images/s at 64 connections against aiohttp's ~3,000 (same machine, same run)."""

    def __init__(self, settings: FetchSettings) -> None:
        import aiohttp

        self.settings = settings
        self._aiohttp = aiohttp
        connector = aiohttp.TCPConnector(limit=settings.concurrency, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=None,  # a slow but steady download is bounded by max_bytes instead
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": settings.user_agent, "Accept": "image/*,*/*;q=0.8"},
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._hosts: dict[str, asyncio.Semaphore] = {}
        # The per-process semaphore keeps this loop's own waiters off the shared slots,
        # which hold the limit over the machine's other workers too.
        self._shared = host_slots()

    def _host(self, url: str) -> asyncio.Semaphore:
        host = url_host(url) or ""
        if host not in self._hosts:
            self._hosts[host] = asyncio.Semaphore(self.settings.per_host)
        return self._hosts[host]

    async def fetch(self, index: int, url: str) -> Fetched:
        found = Fetched(index=index, url=url)
        started = time.monotonic()
        if url_host(url) is None:
            found.reason = "bad_url: not an http(s) URL with a host"
            return found
        try:
            while True:
                found.attempts += 1
                try:
                    async with self._host(url):
                        await self._polite_once(url, found)
                    break
                except _Retry as retry:
                    if found.attempts > self.settings.retries:
                        raise _Fail(retry.reason) from None
                    backoff = self.settings.backoff * 2 ** (found.attempts - 1)
                    await asyncio.sleep(retry.wait if retry.wait is not None else backoff)
        except _Fail as fail:
            found.data = None
            found.reason = fail.reason
        finally:
            found.fetch_ms = round((time.monotonic() - started) * 1000)
        return found

    async def _polite_once(self, url: str, found: Fetched) -> None:
        if self._shared is None:
            await self._once(url, found)
            return
        host = url_host(url) or ""
        slot = await self._shared.take(host, self.settings.per_host)
        try:
            await self._once(url, found)
        finally:
            self._shared.give(slot)

    async def _once(self, url: str, found: Fetched) -> None:
        aiohttp = self._aiohttp
        settings = self.settings
        sent = time.monotonic()
        try:
            async with self.session.get(
                url, allow_redirects=True, max_redirects=settings.max_redirects
            ) as response:
                found.first_byte_ms = round((time.monotonic() - sent) * 1000)
                found.http_status = response.status
                found.content_type = response.headers.get("Content-Type")
                found.final_url = str(response.url)
                status = response.status
                if status == 429 or 500 <= status <= 599:
                    wait = retry_after_seconds(
                        response.headers.get("Retry-After"), settings.max_retry_after
                    )
                    raise _Retry(f"http_{status}", wait)
                if status >= 300:
                    raise _Fail(f"http_{status}")
                found.noai = disallows_ai(response.headers.getall("X-Robots-Tag", []))
                if found.noai and settings.respect_noai:
                    raise _Fail("noai: X-Robots-Tag forbids AI use; body not read")
                declared = response.content_length
                if declared is not None and declared > settings.max_bytes:
                    raise _Fail(
                        f"too_large: Content-Length {declared} over the "
                        f"{settings.max_bytes}-byte cap; body not read"
                    )
                blocks: list[bytes] = []
                held = 0
                async for block in response.content.iter_chunked(_CHUNK):
                    held += len(block)
                    if held > settings.max_bytes:
                        raise _Fail(
                            f"too_large: body over the {settings.max_bytes}-byte cap; "
                            "refused part-way"
                        )
                    blocks.append(block)
                found.data = b"".join(blocks)
        except aiohttp.TooManyRedirects:
            raise _Fail(f"redirect_loop: more than {settings.max_redirects} redirects") from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlRedirectClientError) as exc:
            raise _Fail(f"bad_url: {type(exc).__name__}") from None
        except aiohttp.ConnectionTimeoutError:
            raise _Retry("connect_timeout") from None
        except TimeoutError:
            raise _Retry("timeout") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            raise _Retry("connection_closed: the server closed the connection early") from None
        except aiohttp.ClientResponseError as exc:
            raise _Fail(f"bad_response: {exc.message}") from None
        except (ValueError, UnicodeError) as exc:
            # A URL that cannot even be requested (a space in the host, a bad IDNA name,
            # a port out of range): one row says so; the other URLs go on.
            raise _Fail(f"bad_url: {type(exc).__name__}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Retry(f"transport_error: {type(exc).__name__}") from None

    async def close(self) -> None:
        await self.session.close()


def fetch_stream(urls: Sequence[tuple[int, str]], settings: FetchSettings) -> Iterator[Fetched]:
    """Each (index, url)'s `Fetched`, in completion order. At most `settings.concurrency`
    requests are in flight or fetched-but-untaken; closing the generator stops them all."""
    results: queue.Queue[Fetched | BaseException | None] = queue.Queue()
    loop = asyncio.new_event_loop()
    # How many results the caller has taken. The loop reads it and never waits on the
    # caller's thread: waking the loop from here once per image (call_soon_threadsafe)
    # made the two threads trade the GIL on every image, ~2-5 ms each on a busy machine.
    taken = [0]

    async def produce() -> None:
        fetcher = Fetcher(settings)
        tasks: set[asyncio.Task[None]] = set()

        async def one(index: int, url: str) -> None:
            try:
                results.put(await fetcher.fetch(index, url))
            except Exception as exc:  # a bug, not a fetch failure: end the shard
                results.put(exc)
                raise

        try:
            for started, (index, url) in enumerate(urls):
                while started - taken[0] >= settings.concurrency:
                    await asyncio.sleep(_POLL_SECONDS)  # in flight or waiting to be taken
                task = asyncio.create_task(one(index, url))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await fetcher.close()

    # Made here, before the loop runs, so that closing the generator at once cancels it.
    main = loop.create_task(produce())

    def drive() -> None:
        try:
            loop.run_until_complete(main)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            results.put(exc)
        finally:
            results.put(None)
            loop.close()

    thread = threading.Thread(target=drive, name="clearset-fetch", daemon=True)
    thread.start()
    try:
        while taken[0] < len(urls):
            result = results.get()
            if result is None:
                break
            if isinstance(result, BaseException):
                raise result
            taken[0] += 1
            yield result
            del result  # the bytes go as soon as the caller is done with them
    finally:
        with contextlib.suppress(RuntimeError):  # the loop has ended meanwhile
            loop.call_soon_threadsafe(main.cancel)
        thread.join()
