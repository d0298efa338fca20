"""The run directory: manifest content, stage bookkeeping, atomic writes."""

from __future__ import annotations

import json

import pytest

from sentidistill.config import PipelineConfig
from sentidistill.rundir import RunDir


def test_manifest_content(tmp_path):
    cfg = PipelineConfig(name="m", runs_dir=tmp_path)
    rd = RunDir(cfg.run_dir)
    rd.open(cfg, config_hash=cfg.config_hash(), seeds={"pipeline": 42})
    m = json.loads((cfg.run_dir / "manifest.json").read_text())
    assert m["config_hash"] == cfg.config_hash()
    assert m["config"]["student"]["model"] == "builtin:smollm2-135m-instruct"
    assert m["seeds"] == {"pipeline": 42}
    assert m["versions"]["torch"].startswith("2.13.0")
    assert "transformers" in m["versions"] and "python" in m["versions"]
    assert "git_commit" in m and m["started"] and m["status"] == "running"
    assert (cfg.run_dir / "config.yaml").exists()
    rd.finish("done")
    m = rd.read_manifest()
    assert m["status"] == "done" and m["finished"]


def test_stage_bookkeeping_and_resume(tmp_path):
    cfg = PipelineConfig(name="s", runs_dir=tmp_path)
    rd = RunDir(cfg.run_dir)
    rd.open(cfg, config_hash=cfg.config_hash())
    with rd.stage("teach") as info:
        info["items"] = 3
    assert rd.stage_done("teach")
    assert rd.stage_info("teach")["items"] == 3
    with pytest.raises(RuntimeError), rd.stage("train"):
        raise RuntimeError("boom")
    assert rd.stage_info("train")["status"] == "failed"
    assert "boom" in rd.stage_info("train")["error"]
    # Same config: finished stages survive a reopen.
    rd.open(cfg, config_hash=cfg.config_hash())
    assert rd.stage_done("teach")
    # A changed config keeps the entries (the pipeline judges each stage by its settings and inputs) and
    # records the hash it replaced.
    cfg2 = PipelineConfig(name="s", runs_dir=tmp_path, seed=1)
    rd.open(cfg2, config_hash=cfg2.config_hash())
    assert rd.stage_done("teach")
    assert rd.read_manifest()["previous_config_hash"] == cfg.config_hash()
    assert rd.read_manifest()["config"]["seed"] == 1
