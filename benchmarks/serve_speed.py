"""Serving at engine speed: the classifier student's engine alone vs the same model behind ``sentidistill serve``.

    python benchmarks/serve_speed.py                      # untrained MiniLM classifier (sst2 head): PyTorch + ONNX int8
    python benchmarks/serve_speed.py --model runs/x/models/classifier/final --backends onnx-int8 --seconds 5

One run, one table, per backend (PyTorch fp32; ONNX int8, exported by the script):

* **engine** (no HTTP): the backend's whole path for a batch (tokenisation, encoder, pooling, every head;
  :class:`~sentidistill.serve.classifier_backends.TorchClassifierBackend` / ``OnnxClassifierBackend``).
  Batch 1: latency p50/p95 per text. Batch ``--batch-size``: texts/s.
* **HTTP, 1 client**: ``POST /v1/analyze`` with one text, one request at a time; p50/p95 latency.
* **HTTP, N clients** (``--clients``, 64): N connections, each sending its next one-text request as soon as the
  last is answered, for ``--seconds``; texts/s answered (all checked: status 200 and a prediction), and that as
  a percentage of the engine's batched texts/s. Targets (issue 22): >= 80% of the engine; 1 client p50 <= engine
  batch-1 p50 + 3 ms.

How the cores are shared: the server is the real CLI (``python -m sentidistill.serve MODEL --max-batch-size B``,
access log off, its default) in its own process pinned with ``taskset`` to ``--server-cpus`` (default: cpu 0),
with ``--threads`` intra-op threads (default 1 = the number of server cpus); the engine rows are timed in this
process pinned to the same cpus with the same threads, before the server starts, so engine and server have the
same compute. The load generator is another process pinned to ``--client-cpus`` (default: cpu 1): an asyncio
client on raw keep-alive HTTP/1.1 connections (a pre-built request per text, the response's status line and
Content-Length parsed, the body checked for ``"prediction"``), which costs far less CPU per request than an
HTTP library. On a machine shared with other work the numbers move; the ratios (HTTP / engine, measured
minutes apart in one run) are what to read, with the load average printed beside them. ``--json`` writes the
rows. The whole run takes about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classifier_speed import default_model, load_texts

TASK = "sentiment"


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


# -- the engine alone ----------------------------------------------------------------------------------

def bench_engine(backend: Any, texts: list[str], batch: int, n_single: int) -> dict[str, float]:
    """Batch-1 latency p50/p95 (ms) over ``n_single`` texts; texts/s in batches of ``batch`` over ``texts``;
    and the CPU ms per text of each (this process's CPU time, all threads)."""
    for t in texts[:4]:
        backend.logits([t])
    backend.logits(texts[:batch])
    lat = []
    c0 = time.process_time()
    for t in texts[:n_single]:
        t0 = time.perf_counter()
        backend.logits([t])
        lat.append(time.perf_counter() - t0)
    b1_cpu = (time.process_time() - c0) / n_single
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(texts), batch):
        backend.logits(texts[i: i + batch])
    wall = time.perf_counter() - t0
    batched_cpu = (time.process_time() - c0) / len(texts)
    return {"b1_p50_ms": pct(lat, 50) * 1e3, "b1_p95_ms": pct(lat, 95) * 1e3, "batched_tps": len(texts) / wall,
            "b1_cpu_ms": b1_cpu * 1e3, "batched_cpu_ms": batched_cpu * 1e3}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the load generator (its own process) --------------------------------------------------------------

def _request(port: int, text: str) -> bytes:
    body = json.dumps({"task": TASK, "texts": [text]}).encode()
    return (f"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _one_connection(port: int, reqs: list[bytes], start: int, stop_at: float | None, count: int | None,
                          lat: list[float], errors: list[str]) -> int:
    """Requests on one keep-alive connection until ``stop_at`` (or ``count`` requests); returns how many."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done, i = 0, start
    try:
        while (count is None or done < count) and (stop_at is None or time.perf_counter() < stop_at):
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200") or b'"prediction"' not in body:
                errors.append(head.split(b"\r\n", 1)[0].decode() + " " + body[:200].decode(errors="replace"))
            done += 1
            i += 1
    finally:
        writer.close()
    return done


async def _load(port: int, texts: list[str], clients: int, seconds: float, warmup_s: float,
                count: int | None) -> dict[str, Any]:
    reqs = [_request(port, t) for t in texts]
    # Connections up, server warm (not counted): ``warmup_s`` seconds, or 8 requests per connection.
    await asyncio.gather(*(_one_connection(port, reqs, c * 7, time.perf_counter() + warmup_s if warmup_s else None,
                                           None if warmup_s else 8, [], []) for c in range(clients)))
    lat: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    stop_at = None if count is not None else t0 + seconds
    n = await asyncio.gather(*(_one_connection(port, reqs, c * 7, stop_at, count, lat, errors)
                               for c in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": sum(n), "wall_s": wall, "tps": sum(n) / wall, "p50_ms": pct(lat, 50) * 1e3,
            "p95_ms": pct(lat, 95) * 1e3, "errors": len(errors), "first_error": errors[0] if errors else None}


def loadgen_main(argv: list[str]) -> int:
    """``serve_speed.py --loadgen PORT CLIENTS SECONDS COUNT TEXTS_JSON``: prints one JSON line."""
    port, clients, seconds, count, path = int(argv[0]), int(argv[1]), float(argv[2]), int(argv[3]), argv[4]
    texts = json.loads(Path(path).read_text(encoding="utf-8"))
    res = asyncio.run(_load(port, texts, clients, seconds, warmup_s=0.0 if count else 1.0,
                            count=count or None))
    print(json.dumps(res))
    return 0


# -- the server ----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def start_server(model: Path, *, int8: bool, port: int, cpus: str, threads: int, batch: int,
                 extra: list[str]) -> subprocess.Popen:
    """The real CLI in its own pinned process; returns once /health answers."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [*_taskset(cpus), sys.executable, "-m", "sentidistill.serve", str(model), "--port", str(port),
           "--max-batch-size", str(batch), "--max-texts", str(batch), "--log-level", "warning",
           *(["--int8"] if int8 else []), *extra]
    # A file, not a pipe (a pipe nobody reads would block the server); it lives as long as the server.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not come up in 180 s")


def batch_stats(port: int) -> tuple[float, float]:
    """(batches, texts) the server has run so far, from its /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    vals = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("sentidistill_batch_size_count", "sentidistill_batch_size_sum"))}
    return vals.get("sentidistill_batch_size_count", 0.0), vals.get("sentidistill_batch_size_sum", 0.0)


def run_load(port: int, cpus: str, clients: int, seconds: float, count: int, texts_path: Path) -> dict[str, Any]:
    out = subprocess.run([*_taskset(cpus), sys.executable, __file__, "--loadgen", str(port), str(clients),
                          str(seconds), str(count), str(texts_path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"]:
        return loadgen_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="classifier checkpoint (default: untrained MiniLM, sst2 head)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "SENTIDISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--backends", default="torch,onnx-int8", help="comma list: torch, onnx, onnx-int8")
    ap.add_argument("--n", type=int, default=256, help="texts for the batched engine row")
    ap.add_argument("--n-single", type=int, default=64, help="texts for batch-1 latency and the 1-client row")
    ap.add_argument("--batch-size", type=int, default=32, help="engine batch; the server's --max-batch-size")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the N-client load")
    ap.add_argument("--server-cpus", default="0", help="taskset cpu list for the server and the engine rows")
    ap.add_argument("--client-cpus", default="1", help="taskset cpu list for the load generator")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: number of server cpus)")
    ap.add_argument("--server-args", default="", help="extra CLI options for `sentidistill serve`")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from sentidistill.serve.classifier_backends import OnnxClassifierBackend, TorchClassifierBackend
    from sentidistill.serve.classifier_onnx import export_classifier_onnx
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party()
    server_cpus = sorted({int(c) for part in args.server_cpus.split(",") for c in
                          (range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1))})
    threads = args.threads or len(server_cpus)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, server_cpus)  # the engine rows get the server's cpus
    torch.set_num_threads(threads)
    texts, source = load_texts(args.data, max(args.n, args.n_single))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = args.model or default_model(tmp)
        onnx_dir = export_classifier_onnx(model, tmp / "onnx", int8=True) if any(
            b.startswith("onnx") for b in backends) else None
        texts_path = tmp / "texts.json"
        texts_path.write_text(json.dumps(texts[: args.n_single]), encoding="utf-8")
        for name in backends:
            int8 = name == "onnx-int8"
            if name == "torch":
                backend, spec = TorchClassifierBackend(model), model
            else:
                backend, spec = OnnxClassifierBackend(onnx_dir, int8=int8, threads=threads), onnx_dir
            eng = bench_engine(backend, texts[: args.n], args.batch_size, args.n_single)
            del backend
            print(f"  {name} engine: batch 1 p50 {eng['b1_p50_ms']:.1f} ms, batch {args.batch_size} "
                  f"{eng['batched_tps']:.1f} texts/s", file=sys.stderr)
            port = _free_port()
            proc = start_server(spec, int8=int8, port=port, cpus=args.server_cpus, threads=threads,
                                batch=args.batch_size, extra=args.server_args.split())
            try:
                c0, (_, s0) = cpu_seconds(proc.pid), batch_stats(port)
                one = run_load(port, args.client_cpus, 1, 0, args.n_single, texts_path)
                c1 = cpu_seconds(proc.pid)
                b0, t0 = batch_stats(port)
                many = run_load(port, args.client_cpus, args.clients, args.seconds, 0, texts_path)
                b1, t1 = batch_stats(port)
                c2 = cpu_seconds(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            row = {"backend": name, **eng, "http1_p50_ms": one["p50_ms"], "http1_p95_ms": one["p95_ms"],
                   "httpN_tps": many["tps"], "httpN_p50_ms": many["p50_ms"], "httpN_p95_ms": many["p95_ms"],
                   "httpN_requests": many["requests"], "errors": one["errors"] + many["errors"],
                   "first_error": one["first_error"] or many["first_error"],
                   "pct_of_engine": 100 * many["tps"] / eng["batched_tps"],
                   "http1_minus_engine_ms": one["p50_ms"] - eng["b1_p50_ms"],
                   "httpN_mean_batch": (t1 - t0) / max(1.0, b1 - b0),
                   # the server's CPU per text answered (warm-up requests included on both sides)
                   "http1_cpu_ms": 1e3 * (c1 - c0) / max(1.0, t0 - s0),
                   "httpN_cpu_ms": 1e3 * (c2 - c1) / max(1.0, t1 - t0)}
            row["cpu_pct_of_engine"] = 100 * row["batched_cpu_ms"] / row["httpN_cpu_ms"]
            print(f"  {name} HTTP: 1 client p50 {one['p50_ms']:.1f} ms; {args.clients} clients "
                  f"{many['tps']:.1f} texts/s ({row['pct_of_engine']:.0f}% of the engine), {row['errors']} errors",
                  file=sys.stderr)
            rows.append(row)
    load = os.getloadavg()
    print(f"\n## Serving speed: classifier student, {source}\n")
    print(f"model: {args.model or 'untrained MiniLM classifier (builtin:minilm, sst2 head)'}; server and engine on "
          f"cpu {args.server_cpus} ({threads} thread{'s' * (threads > 1)}), load generator on cpu {args.client_cpus}; "
          f"{os.cpu_count()} cpus; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(f"| backend | engine b1 p50 ms | engine b{args.batch_size} texts/s | HTTP 1 client p50 / p95 ms | "
          f"HTTP 1 client p50 - engine b1 ms | HTTP {args.clients} clients texts/s | % of engine | "
          f"HTTP {args.clients} clients p50 / p95 ms | mean batch | requests (errors) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['backend']} | {r['b1_p50_ms']:.1f} | {r['batched_tps']:.1f} | {r['http1_p50_ms']:.1f} / "
              f"{r['http1_p95_ms']:.1f} | {r['http1_minus_engine_ms']:+.1f} | {r['httpN_tps']:.1f} | "
              f"{r['pct_of_engine']:.0f}% | {r['httpN_p50_ms']:.0f} / {r['httpN_p95_ms']:.0f} | {r['httpN_mean_batch']:.1f} | "
              f"{r['httpN_requests']} ({r['errors']}) |")
    print(f"\nCPU per text (ms; wall-clock-free, so less sensitive to other load on the machine): engine batch 1 / "
          f"batch {args.batch_size}; server 1 client / {args.clients} clients; engine batched CPU as % of the "
          f"server's at {args.clients} clients (what % of engine a server with its cpu to itself reaches)\n")
    print("| backend | engine b1 | engine batched | server 1 client | server N clients | CPU % of engine |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['backend']} | {r['b1_cpu_ms']:.2f} | {r['batched_cpu_ms']:.2f} | {r['http1_cpu_ms']:.2f} | "
              f"{r['httpN_cpu_ms']:.2f} | {r['cpu_pct_of_engine']:.0f}% |")
    print("\ntargets (issue 22): % of engine >= 80; HTTP 1 client p50 - engine b1 <= +3.0 ms")
    for r in rows:
        if r["first_error"]:
            print(f"{r['backend']}: first error: {r['first_error']}")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "load_average": load, "threads": threads,
                                         "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
                                         "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
