"""The bench shows a progress bar (rate, ETA) for students, not only for teachers: with progress on, a task's
items are asked in chunks under one bar, and the answers are those of one call; a teacher that draws its own
bar (calls, tokens, cache hits) is asked in one piece so one bar shows per task."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sentidistill.bench import get_task
from sentidistill.bench.models import Answer
from sentidistill.bench.runner import run_task
from test_config_boundaries import _task as toy_task


def _task(tmp_path: Path, n: int) -> Path:
    """A 3-label toy task of ``n`` texts "text number <i>" (the boundaries tests' task file)."""
    return toy_task(tmp_path, [f"text number {i}" for i in range(n)])


class _Student:
    """Answers by the item number in the text (so a misaligned chunk would change the answers)."""

    prompt_style = "plain"
    name = "toy-student"
    batch_size = 4

    def __init__(self, teacher_progress: bool | None = None) -> None:
        self.calls: list[int] = []
        if teacher_progress is not None:
            self.teacher = SimpleNamespace(progress=teacher_progress)

    def choose(self, prompts, words, *, task="", rows=None):
        assert rows is not None and len(rows) == len(prompts)
        self.calls.append(len(prompts))
        out = []
        for p, r in zip(prompts, rows, strict=True):
            i = int(str(r["text"]).rsplit(" ", 1)[1])
            assert f"text number {i}" in str(p)  # prompts and rows stay paired within a chunk
            out.append(Answer(text=words[i % 3 if i % 5 else 0], scores=None))
        return out


@pytest.mark.parametrize("n", [64, 65, 150])
def test_student_bench_is_chunked_under_a_bar_with_the_same_answers(tmp_path, monkeypatch, capsys, n):
    task = get_task(str(_task(tmp_path, n)))
    monkeypatch.setenv("SENTIDISTILL_PROGRESS", "0")
    plain = _Student()
    quiet = run_task(plain, task, shots=0, bootstrap=0)
    assert plain.calls == [n]
    assert "ETA" not in capsys.readouterr().err

    monkeypatch.setenv("SENTIDISTILL_PROGRESS", "1")
    shown = _Student()
    loud = run_task(shown, task, shots=0, bootstrap=0)
    assert shown.calls == [64] * (n // 64) + ([n % 64] if n % 64 else [])  # max(64, 4 x batch_size)
    assert loud["score"] == quiet["score"] and loud["seeds"]["42"]["unparseable_rate"] == 0.0
    err = capsys.readouterr().err
    assert f"{n}/{n}" in err and "ETA" in err and "items/s" in err and "toy-student" in err


def test_a_teacher_with_its_own_bar_is_asked_in_one_piece(tmp_path, monkeypatch, capsys):
    task = get_task(str(_task(tmp_path, 150)))
    monkeypatch.setenv("SENTIDISTILL_PROGRESS", "1")
    own_bar = _Student(teacher_progress=True)
    run_task(own_bar, task, shots=0, bootstrap=0)
    assert own_bar.calls == [150]
    no_bar = _Student(teacher_progress=False)  # e.g. `sentidistill bench --model openai:...`
    run_task(no_bar, task, shots=0, bootstrap=0)
    assert no_bar.calls == [64, 64, 22]
