"""A fault-injecting HTTP/1.1 reverse proxy on loopback, driven by a seeded schedule.

For each request it draws one outcome: forward unchanged, drop the connection, answer 429 with
``Retry-After``, answer 500/503, forward after a delay longer than the client's timeout, forward a
JSON body cut in half (valid HTTP, invalid JSON), or announce the full body but close half-way.
``GET /__faults`` returns the counts of each outcome drawn.

Run: ``python tests/fault_proxy.py --upstream http://127.0.0.1:8123 --port 8124 --seed 7 --fault-rate 0.4``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

FAULTS = ("drop", "429", "500", "503", "slow", "truncate", "cut")


class FaultProxy:
    def __init__(self, upstream: str, seed: int, fault_rate: float, slow_s: float, faults: tuple[str, ...]) -> None:
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.slow_s = slow_s
        self.faults = faults
        self.counts: Counter[str] = Counter()
        self.client = httpx.AsyncClient(timeout=60)

    def draw(self) -> str:
        if self.rng.random() >= self.fault_rate:
            return "ok"
        return self.rng.choice(self.faults)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if path == "/__faults":
                    await self._send(writer, 200, json.dumps(dict(self.counts)).encode())
                    continue
                outcome = self.draw()
                self.counts[outcome] += 1
                if outcome == "drop":
                    return
                if outcome == "429":
                    await self._send(writer, 429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.1"})
                    continue
                if outcome in ("500", "503"):
                    await self._send(writer, int(outcome), b'{"error": {"message": "injected failure"}}')
                    continue
                if outcome == "slow":
                    await asyncio.sleep(self.slow_s)
                fwd_headers = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
                up = await self.client.request(method, self.upstream + path, content=body, headers=fwd_headers)
                data = up.content
                if outcome == "truncate":
                    data = data[: len(data) // 2]
                if outcome == "cut":
                    head_bytes = self._head(up.status_code, len(data), {"Content-Type": "application/json"})
                    writer.write(head_bytes + data[: len(data) // 2])
                    await writer.drain()
                    return
                await self._send(writer, up.status_code, data)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _head(status: int, length: int, extra: dict[str, str] | None = None) -> bytes:
        reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
        lines = [f"HTTP/1.1 {status} {reason.get(status, 'Status')}", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(self, writer: asyncio.StreamWriter, status: int, data: bytes, extra: dict[str, str] | None = None) -> None:
        writer.write(self._head(status, len(data), {"Content-Type": "application/json", **(extra or {})}) + data)
        await writer.drain()


async def serve(args: argparse.Namespace) -> None:
    faults = tuple(args.faults.split(",")) if args.faults else FAULTS
    proxy = FaultProxy(args.upstream, args.seed, args.fault_rate, args.slow, faults)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def running_proxy(upstream: str, seed: int = 0, fault_rate: float = 0.4, slow_s: float = 2.0) -> Iterator[str]:
    """Start the proxy in a subprocess in front of ``upstream``; yields its base URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from teacher_server import free_port, subprocess_on_port

    port = free_port()
    args = [
        str(Path(__file__).resolve()), "--upstream", upstream, "--port", str(port),
        "--seed", str(seed), "--fault-rate", str(fault_rate), "--slow", str(slow_s),
    ]
    with subprocess_on_port(args, port) as url:
        yield url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fault-rate", type=float, default=0.4)
    ap.add_argument("--slow", type=float, default=2.0, help="delay of a 'slow' response, seconds")
    ap.add_argument("--faults", default="", help="comma-separated subset of " + ",".join(FAULTS))
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    main()
