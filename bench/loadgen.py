"""A closed-loop HTTP load generator: C clients, each sending its next request when the last
one is answered, over keep-alive connections (one per client thread).

Threads in one process, standard library only: on a 2-core machine a heavier generator would
steal the server's CPU. The same generator drives the baseline and the subject, so the cost it
adds is on both sides of the ratio; a trivially cheap baseline endpoint may be generator-bound,
which makes the ratio pessimistic, never flattering.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.common import percentile


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    sample_bodies: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p99_ms": percentile(self.latencies_ms, 99),
            "ok": self.ok,
            "statuses": dict(self.statuses),
        }


def request_once(base_url: str, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, Any]:
    """One request on a fresh connection; returns (status, decoded JSON or text)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def run_load(
    base_url: str,
    *,
    method: str,
    path_for: Callable[[int], str],
    body_for: Callable[[int], bytes | None],
    headers: dict[str, str],
    concurrency: int,
    total_requests: int | None = None,
    duration_s: float | None = None,
    warmup_requests: int = 0,
    headers_for: Callable[[int], dict[str, str]] | None = None,
) -> LoadResult:
    """Drive the server; stops after `total_requests` answers or `duration_s` seconds.

    Request numbers are global (0, 1, 2, ...) so the bodies are distinct across clients.
    Warm-up requests (per client) are sent first and not measured.
    """
    parts = urlsplit(base_url)
    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(10**12))
    stop_at: list[float] = []
    hdrs = {"Content-Type": "application/json", "Connection": "keep-alive", **headers}

    def next_index() -> int | None:
        with lock:
            i = next(counter)
        if total_requests is not None and i >= total_requests + warmup_requests * concurrency:
            return None
        if stop_at and time.monotonic() >= stop_at[0]:
            return None
        return i

    barrier = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        lat: list[float] = []
        statuses: Counter = Counter()
        errors: list[str] = []
        samples: dict[int, str] = {}

        def send(i: int) -> tuple[int, float]:
            nonlocal conn
            started = time.perf_counter()
            for attempt in range(2):
                try:
                    req_headers = {**hdrs, **headers_for(i)} if headers_for else hdrs
                    conn.request(method, path_for(i), body=body_for(i), headers=req_headers)
                    resp = conn.getresponse()
                    raw = resp.read()
                    if resp.status >= 300 and resp.status not in samples:
                        samples[resp.status] = raw[:500].decode(errors="replace")
                    return resp.status, (time.perf_counter() - started) * 1000
                except (http.client.HTTPException, OSError) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
                    if attempt:
                        errors.append(f"{type(exc).__name__}: {exc}")
            return 0, (time.perf_counter() - started) * 1000

        for _ in range(warmup_requests):
            i = next_index()
            if i is not None:
                send(i)
        barrier.wait()
        while (i := next_index()) is not None:
            status, ms = send(i)
            statuses[status] += 1
            if status:
                lat.append(ms)
        conn.close()
        with lock:
            result.latencies_ms.extend(lat)
            result.statuses.update(statuses)
            result.errors.extend(errors[:5])
            for k, v in samples.items():
                result.sample_bodies.setdefault(k, v)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    if duration_s is not None:
        stop_at.append(started + duration_s)
    for t in threads:
        t.join()
    result.elapsed_s = time.monotonic() - started
    return result
