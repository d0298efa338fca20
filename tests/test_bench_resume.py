"""``run_bench`` resumes per (task, seed): finished work is read back, a changed setting recomputes,
a killed run continues where it stopped. Calls are counted on a real tiny HF model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from bench_teacher_lm import write_sst2_folder
from sentidistill.bench.models import HFModelAdapter
from sentidistill.bench.runner import run_bench


class Killed(Exception):
    pass


class CountingAdapter(HFModelAdapter):
    """The real adapter, counting the prompts it is asked; ``die_after`` calls simulate a killed run."""

    def __init__(self, *args: Any, die_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []
        self.die_after = die_after

    def _count(self, kind: str, n: int) -> None:
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise Killed
        self.calls.append((kind, n))

    def choose(self, prompts, words, *, task="", rows=None):
        self._count("choose", len(prompts))
        return super().choose(prompts, words, task=task)

    def generate(self, prompts, max_new_tokens, *, task="", stop=None):
        self._count("generate", len(prompts))
        return super().generate(prompts, max_new_tokens, task=task, stop=stop)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sst2_folder(tmp_path_factory.mktemp("data"), n_test=6)


@pytest.fixture(scope="module")
def lm(tiny_causal_dir: Path):
    from sentidistill.students import load_student

    return load_student(str(tiny_causal_dir), device="cpu")


def bench(adapter, out: Path, data_dir: Path, **kw: Any) -> dict:
    opts = {"shots": 1, "seeds": [42, 43], "scoring": "restricted", "out_dir": out, "data_dir": data_dir, **kw}
    return run_bench(adapter, ["sst2"], **opts)


def test_finished_seeds_are_not_recomputed(lm, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = CountingAdapter(lm)
    first = bench(a, out, data_dir)
    assert a.calls == [("choose", 6), ("choose", 6)]
    assert (out / "progress" / "sst2.seed42.json").is_file() and (out / "progress" / "sst2.seed43.json").is_file()

    b = CountingAdapter(lm)
    again = bench(b, out, data_dir)
    assert b.calls == []
    assert again["tasks"]["sst2"]["resumed_seeds"] == [42, 43]
    for key in ("sentibench_score", "items"):
        assert again[key] == first[key]
    assert again["tasks"]["sst2"]["seeds"] == first["tasks"]["sst2"]["seeds"]  # wall_s is the recorded one

    # Every setting that changes what the model is asked recomputes, nothing else does.
    for kw, expect in [({"scoring": "generate"}, [("generate", 6)] * 2), ({"limit": 4}, [("choose", 4)] * 2),
                       ({"seeds": [42, 44]}, [("choose", 6)]), ({"shots": 2}, [("choose", 6)] * 2)]:
        changed = tmp_path / f"changed_{'_'.join(kw)}"
        shutil.copytree(out, changed)  # each change against the same finished run
        c = CountingAdapter(lm)
        bench(c, changed, data_dir, **kw)
        assert c.calls == expect, kw
    # resume=False asks again.
    d = CountingAdapter(lm)
    bench(d, out, data_dir, resume=False)
    assert d.calls == [("choose", 6), ("choose", 6)]


def test_killed_run_resumes_at_the_unfinished_seed(lm, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(Killed):
        bench(CountingAdapter(lm, die_after=1), out, data_dir)
    assert (out / "progress" / "sst2.seed42.json").is_file()
    assert not (out / "progress" / "sst2.seed43.json").exists() and not (out / "metrics.json").exists()

    a = CountingAdapter(lm)
    resumed = bench(a, out, data_dir)
    assert a.calls == [("choose", 6)] and resumed["tasks"]["sst2"]["resumed_seeds"] == [42]
    fresh = bench(CountingAdapter(lm), tmp_path / "fresh", data_dir)
    assert resumed["tasks"]["sst2"]["mean"]["score"] == fresh["tasks"]["sst2"]["mean"]["score"]
    for seed in (42, 43):
        name = f"predictions/sst2.seed{seed}.jsonl"
        assert (out / name).read_text(encoding="utf-8") == (tmp_path / "fresh" / name).read_text(encoding="utf-8")

    # A damaged progress file or predictions file that no longer matches costs a recomputation, not a crash.
    (out / "progress" / "sst2.seed42.json").write_text("{not json", encoding="utf-8")
    lines = (out / "predictions" / "sst2.seed43.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "predictions" / "sst2.seed43.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    b = CountingAdapter(lm)
    bench(b, out, data_dir)
    assert b.calls == [("choose", 6), ("choose", 6)]
    assert json.loads((out / "progress" / "sst2.seed42.json").read_text(encoding="utf-8"))["n"] == 6


def test_retrained_weights_recompute(tiny_causal_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    from sentidistill.students import load_student

    lm = load_student(str(tiny_causal_dir), device="cpu")  # its own copy: the weights change below
    out = tmp_path / "out"
    bench(CountingAdapter(lm), out, data_dir, seeds=[42])
    with torch.no_grad():
        next(lm.model.parameters()).add_(1e-3)  # same source path, other weights (e.g. trained in place)
    a = CountingAdapter(lm)
    bench(a, out, data_dir, seeds=[42])
    assert a.calls == [("choose", 6)]
