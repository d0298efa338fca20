"""One run, one directory: manifest, stage status, log, artefacts.

```
runs/<name>/
  manifest.json         config, config hash, versions, git commit, seeds, stage status and times
  config.yaml           the validated config (no secrets: keys come from the environment)
  teacher_cache.sqlite  every teacher response, committed as it arrives
  corpus/               what each teaching stage produced (Parquet)
  checkpoints/          Trainer checkpoints (safetensors), resumable
  models/               final student checkpoints, one per stage
  bench/                predictions (JSONL) and metrics JSON per evaluated model
  report.md, report.html, log.txt
```
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from sentidistill.utils.io import atomic_write_json, atomic_write_text

_TRACKED_PACKAGES = [
    "sentidistill", "torch", "transformers", "accelerate", "datasets", "pyarrow", "openai",
    "trl", "peft", "llama_cpp_python", "onnxruntime", "scikit-learn", "pydantic",
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the source tree sentidistill runs from (None outside a git checkout)."""
    here = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class RunDir:
    """A run directory and its manifest. Stage status makes re-running the same config resume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"

    # -- layout -------------------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        return self.path / "teacher_cache.sqlite"

    @property
    def corpus_dir(self) -> Path:
        return self.path / "corpus"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def bench_dir(self) -> Path:
        return self.path / "bench"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    # -- manifest -----------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def open(self, config: Any, *, config_hash: str, seeds: dict[str, int] | None = None) -> dict[str, Any]:
        """Create or reopen the run. The stage entries are kept when the config changed (the previous hash is
        recorded): each stage records the settings it ran with and its inputs, and
        :func:`sentidistill.pipeline.run_pipeline` decides per stage whether its result still holds."""
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.read_manifest()
        config_dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        if manifest.get("config_hash") != config_hash:
            previous = manifest.get("config_hash")
            manifest = {"config_hash": config_hash, "created": manifest.get("created", _now()),
                        "stages": manifest.get("stages", {})}
            if previous:
                manifest["previous_config_hash"] = previous
        manifest.update(
            {
                "config": config_dump,
                "versions": package_versions(),
                "git_commit": git_commit(),
                "seeds": seeds or {},
                "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "command": " ".join(sys.argv),
                "started": _now(),
                "finished": None,
                "status": "running",
            }
        )
        self._write_manifest(manifest)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config_dump, sort_keys=False))
        return manifest

    def annotate_stages(self, info: dict[str, dict[str, Any]]) -> None:
        """Add fields to existing stage entries (``{stage: {field: value}}``; absent stages are skipped)."""
        manifest = self.read_manifest()
        stages = manifest.get("stages", {})
        for name, fields in info.items():
            if name in stages:
                stages[name].update(fields)
        self._write_manifest(manifest)

    def stage_done(self, stage: str) -> bool:
        return self.read_manifest().get("stages", {}).get(stage, {}).get("status") == "done"

    def stage_info(self, stage: str) -> dict[str, Any]:
        return self.read_manifest().get("stages", {}).get(stage, {})

    def mark_stage(self, stage: str, status: str, **info: Any) -> None:
        manifest = self.read_manifest()
        stages = manifest.setdefault("stages", {})
        if status == "running":
            stages[stage] = {}  # a new attempt: nothing of the previous one (its result id, error) carries over
        entry = stages.setdefault(stage, {})
        entry["status"] = status
        entry.update(info)
        if status == "running":
            entry["started"] = _now()
        elif status in {"done", "failed"}:
            entry["finished"] = _now()
        if status == "done":
            # A fresh id for this result: downstream stages record the ids they were built from, so a
            # redone upstream stage makes them stale (see pipeline.run_pipeline).
            entry["token"] = uuid.uuid4().hex
        self._write_manifest(manifest)

    @contextmanager
    def stage(self, name: str, **start_info: Any):
        """Time a stage and record done/failed in the manifest (``start_info`` is recorded at the start)."""
        self.mark_stage(name, "running", **start_info)
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            yield info
        except BaseException as exc:
            self.mark_stage(name, "failed", error=f"{type(exc).__name__}: {exc}"[:500],
                            wall_s=round(time.perf_counter() - t0, 2))
            raise
        self.mark_stage(name, "done", **{**info, "wall_s": round(time.perf_counter() - t0, 2)})

    def finish(self, status: str = "done", **info: Any) -> None:
        manifest = self.read_manifest()
        manifest["finished"] = _now()
        manifest["status"] = status
        manifest.update(info)
        self._write_manifest(manifest)

    # -- logging ------------------------------------------------------------------------------
    def attach_log(self) -> logging.Handler:
        """Mirror the package's log records into log.txt."""
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("sentidistill")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler
