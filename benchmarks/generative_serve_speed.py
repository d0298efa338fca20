"""Serving speed and quality of a generating student (PyTorch, ONNX fp32/int8, HTTP under load) vs the llama.cpp teacher.

(The classifier student's serving benchmark, engine alone vs HTTP, is ``benchmarks/serve_speed.py``.)

Every backend answers the same N SentiBench test inputs with the same task prompt (zero-shot, plain
style, greedy); quality is the task's accuracy / macro-F1 on those inputs.

    python benchmarks/generative_serve_speed.py                       # 200 SST-2 test items, MiniLM student
    python benchmarks/generative_serve_speed.py --n 50 --task twitter --model runs/demo/student --skip-teacher

Throughput (texts/s) is measured with batching (``--batch-size``); latency p50/p95 is per single
request (batch of one) over the first ``--latency-n`` items, i.e. what one interactive caller sees.
The HTTP row is a bounded load generator: ``--clients`` concurrent clients on loopback posting
/v1/analyze one text each, stopping after ``--load-requests`` requests or ``--load-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def quality(task: Any, texts: list[str], rows: list[dict]) -> dict[str, float]:
    m = task.score([task.parse(t) for t in texts], [r["gold"] for r in rows], rows)
    return {"accuracy": m.get("accuracy", float("nan")), "macro_f1": m.get("macro_f1", m.get("score", float("nan")))}


def bench_engine(name: str, make_engine: Any, prompts: list, rows: list[dict], task: Any, args: argparse.Namespace,
                 max_tokens: int) -> dict[str, Any]:
    from sentidistill.serve.engine import GenParams

    params = GenParams(max_tokens=max_tokens)
    with make_engine(args.batch_size) as eng:
        eng.generate(prompts[:2], params)  # warm-up (first-call allocations, lazy inits)
        t0 = time.perf_counter()
        gens = eng.generate(prompts, params)
        wall = time.perf_counter() - t0
        lat = []
        for p in prompts[: args.latency_n]:
            t = time.perf_counter()
            eng.generate([p], params)
            lat.append(time.perf_counter() - t)
    q = quality(task, [g.text for g in gens], rows)
    print(f"  {name}: {len(prompts) / wall:.1f} texts/s, p50 {percentile(lat, 50) * 1000:.0f} ms", file=sys.stderr)
    return {"system": name, "texts_per_s": len(prompts) / wall, "p50_ms": percentile(lat, 50) * 1000,
            "p95_ms": percentile(lat, 95) * 1000, **q, "texts": [g.text for g in gens]}


def bench_teacher(prompts: list, rows: list[dict], task: Any, args: argparse.Namespace, max_tokens: int) -> dict | str:
    """The default GGUF teacher through llama.cpp, or a reason why it was skipped."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'sentidistill[llamacpp]')"
    try:
        from sentidistill.config import TeacherConfig
        from sentidistill.core.assets import resolve_gguf
        from sentidistill.teacher import SamplingParams, TeacherRequest, build_teacher

        cfg = TeacherConfig(kind="llamacpp", model=args.teacher, concurrency=4, repair_attempts=0, max_retries=1)
        resolve_gguf(cfg.model)  # raises when the weight packages are absent
    except Exception as exc:
        return f"teacher {args.teacher} unavailable: {exc}"
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def req(p: Any) -> Any:
        msgs = p if isinstance(p, list) else [{"role": "user", "content": p}]
        return TeacherRequest(messages=msgs, params=sp, prompt_id=f"bench.{task.name}")

    subset = prompts[: args.teacher_n]
    with build_teacher(cfg, None) as teacher:
        teacher.generate([req(subset[0])])  # warm-up: server start and model load are not serving speed
        t0 = time.perf_counter()
        out = teacher.generate([req(p) for p in subset])
        wall = time.perf_counter() - t0
        lat = []
        for p in subset[: min(args.latency_n, 10)]:
            t = time.perf_counter()
            teacher.generate([req(p)])
            lat.append(time.perf_counter() - t)
    q = quality(task, [r.text for r in out], rows[: len(subset)])
    return {"system": f"teacher {args.teacher} (llama.cpp, n={len(subset)})", "texts_per_s": len(subset) / wall,
            "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000, **q}


async def _load(base_url: str, task: str, texts: list[str], clients: int, max_requests: int,
                max_seconds: float) -> tuple[list[float], int, int, float]:
    import httpx

    lat: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < max_requests and time.perf_counter() < deadline:
                i = sent
                sent += 1
                t = time.perf_counter()
                r = await http.post("/v1/analyze", json={"task": task, "texts": [texts[i % len(texts)]]})
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return lat, sent, errors, wall


def bench_http(model: str, task: Any, rows: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from sentidistill.serve.app import create_app
    from sentidistill.serve.background import BackgroundServer

    app = create_app(model, max_batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms,
                     max_texts=args.batch_size, request_timeout_s=300)
    with BackgroundServer(app) as srv:
        texts = [r["text"] for r in rows]
        lat, sent, errors, wall = asyncio.run(_load(srv.base_url, task.name, texts, args.clients,
                                                    args.load_requests, args.load_seconds))
        metrics = {s.name: s.value for fam in text_string_to_metric_families(httpx.get(srv.base_url + "/metrics").text)
                   for s in fam.samples if s.name.startswith("sentidistill_batch_size")}
    mean_batch = metrics.get("sentidistill_batch_size_sum", 0) / max(1, metrics.get("sentidistill_batch_size_count", 1))
    return {"system": f"student HTTP /v1/analyze, {args.clients} clients ({sent} req, {errors} errors, "
                      f"mean batch {mean_batch:.1f})",
            "texts_per_s": len(lat) / wall, "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
            "accuracy": float("nan"), "macro_f1": float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:minilm-encdec")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--data-dir", default=os.environ.get("SENTIDISTILL_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--latency-n", type=int, default=30)
    ap.add_argument("--max-tokens", type=int, default=None, help="Default: the task's max_new_tokens.")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--load-requests", type=int, default=400)
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--teacher", default="builtin:qwen2.5-coder-0.5b")
    ap.add_argument("--teacher-n", type=int, default=50, help="Items for the (slow) teacher; quality on these.")
    ap.add_argument("--skip-teacher", action="store_true")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    args = ap.parse_args()

    from sentidistill.bench import get_task
    from sentidistill.serve.engine import GenerationEngine
    from sentidistill.serve.tasks import default_max_tokens
    from sentidistill.students import load_student as load_model

    task = get_task(args.task)
    if not Path(args.data_dir).is_dir():
        sys.exit(f"data folder {args.data_dir} not found (set --data-dir or SENTIDISTILL_DATA_DIR)")
    rows = task.load(args.split, data_dir=args.data_dir, limit=args.n)
    prompts = [task.prompt(r, [], style="plain") for r in rows]
    max_tokens = args.max_tokens or default_max_tokens(task)
    print(f"{len(rows)} {task.name} {args.split} items, max_tokens {max_tokens}, torch threads "
          f"{__import__('torch').get_num_threads()}", file=sys.stderr)

    loaded = load_model(args.model)
    results: list[dict[str, Any]] = [bench_engine(
        "student PyTorch fp32", lambda bs: GenerationEngine(loaded, max_batch_size=bs, batch_wait_ms=0),
        prompts, rows, task, args, max_tokens)]
    if not args.skip_onnx:
        from sentidistill.serve.onnx import OnnxGenerationEngine, export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            onnx_dir = export_onnx(args.model, Path(tmp) / "onnx", int8=True)
            print(f"  exported ONNX (fp32 + int8) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            for int8 in (False, True):
                name = f"student onnxruntime {'int8' if int8 else 'fp32'}"
                res = bench_engine(name, lambda bs, q=int8: OnnxGenerationEngine(
                    onnx_dir, int8=q, max_batch_size=bs, batch_wait_ms=0), prompts, rows, task, args, max_tokens)
                same_text = sum(a == b for a, b in zip(res["texts"], results[0]["texts"], strict=True))
                same_parse = sum(task.parse(a) == task.parse(b)
                                 for a, b in zip(res["texts"], results[0]["texts"], strict=True))
                res["system"] += f" (agrees w/ torch: {same_parse}/{len(rows)} parsed, {same_text} text)"
                results.append(res)
    if not args.skip_http:
        results.append(bench_http(args.model, task, rows, args))
    teacher: dict | str = "skipped (--skip-teacher)"
    if not args.skip_teacher:
        teacher = bench_teacher(prompts, rows, task, args, max_tokens)
        if isinstance(teacher, dict):
            results.append(teacher)

    print(f"\n## Serving speed: {task.name} {args.split}, n={len(rows)}, model {args.model}\n")
    print("| system | texts/s | p50 ms | p95 ms | accuracy | macro-F1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['system']} | {r['texts_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
              f"{r['accuracy']:.3f} | {r['macro_f1']:.3f} |")
    if isinstance(teacher, str):
        print(f"\nteacher: {teacher}")
    else:
        fastest = max(r["texts_per_s"] for r in results if r["system"].startswith("student"))
        print(f"\nstudent/teacher speed ratio: {fastest / teacher['texts_per_s']:.1f}x (fastest student backend)")


if __name__ == "__main__":
    main()
