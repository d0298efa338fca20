"""Teacher runner throughput against a local OpenAI-compatible server with a fixed artificial latency.

For each concurrency it sends fresh prompts through ``CachedTeacher`` (real openai client, real SQLite
commits) and compares requests/s with the ideal ``concurrency / latency``; then it measures how fast
fully cached batches are answered (cache keys + one batched lookup + deserialisation).

    python benchmarks/teacher_throughput.py --latency 0.2 --concurrency 1 8 32 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sentidistill.config import TeacherConfig
from sentidistill.teacher import CachedTeacher, ResponseCache, SamplingParams, TeacherRequest
from sentidistill.teacher.openai_backend import OpenAIBackend
from teacher_server import running_server


def _requests(tag: str, n: int) -> list[TeacherRequest]:
    params = SamplingParams(max_tokens=32)
    return [TeacherRequest(messages=[{"role": "user", "content": f"{tag} review {i}: the soup was cold"}],
                           params=params) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--rounds", type=int, default=8, help="requests per run = rounds x concurrency (min 10)")
    ap.add_argument("--hits", type=int, default=20000, help="cached requests for the hit-rate measurement")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(latency_s=args.latency) as url:
        cache_path = Path(tmp) / "bench.sqlite"
        for c in args.concurrency:
            cfg = TeacherConfig(kind="openai", base_url=url + "/v1", model="echo", concurrency=c)
            with CachedTeacher(OpenAIBackend.from_config(cfg), cfg, ResponseCache(cache_path), progress=False) as t:
                t.generate(_requests(f"warmup{c}", c))  # open every connection, start the loop thread
                n = max(10, args.rounds * c)
                reqs = _requests(f"c{c}", n)
                t0, cpu0 = time.perf_counter(), time.process_time()
                out = t.generate(reqs)
                dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                assert all(r.status == "unchecked" for r in out)
            rate = n / dt
            ideal = c / args.latency
            rows.append((c, n, dt, rate, ideal, rate / ideal, cpu / n * 1000))

        # Cache hits: fill the cache directly, then answer every request from it.
        reqs = _requests("hits", args.hits)
        cfg = TeacherConfig(kind="openai", base_url=url + "/v1", model="echo")
        cache = ResponseCache(Path(tmp) / "hits.sqlite")
        from sentidistill.core.records import TeacherResponse

        for r in reqs:
            cache.put(r.cache_key("echo"), r, TeacherResponse(text="echo: " + r.messages[0]["content"], model="echo"))
        with CachedTeacher(OpenAIBackend.from_config(cfg), cfg, cache, progress=False) as t:
            t0 = time.perf_counter()
            out = t.generate(reqs)
            hit_dt = time.perf_counter() - t0
            assert t.stats["cache_hits"] == len(reqs) and t.stats["sent"] == 0
        keys = [r.cache_key("echo") for r in reqs]
        with ResponseCache(Path(tmp) / "hits.sqlite") as cache2:
            t0 = time.perf_counter()
            got = cache2.get_many(keys)
            lookup_dt = time.perf_counter() - t0
            assert len(got) == len(keys)

    print(f"\nteacher throughput: server latency {args.latency * 1000:.0f} ms, real openai client, SQLite commits\n")
    print("| concurrency | requests | seconds | req/s | ideal req/s | % of ideal | client CPU ms/req |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c, n, dt, rate, ideal, ratio, cpu_ms in rows:
        print(f"| {c} | {n} | {dt:.2f} | {rate:.1f} | {ideal:.1f} | {ratio * 100:.0f}% | {cpu_ms:.2f} |")
    print(f"\ncache hits through CachedTeacher.generate: {len(reqs)} in {hit_dt:.2f}s = {len(reqs) / hit_dt:,.0f} hits/s")
    print(f"ResponseCache.get_many alone:             {len(keys)} in {lookup_dt:.2f}s = {len(keys) / lookup_dt:,.0f} hits/s")


if __name__ == "__main__":
    main()
