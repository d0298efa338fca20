"""The lazy plug-in registry: imports on first use, did-you-mean errors, no double registration."""

from __future__ import annotations

import sys

import pytest

from sentidistill.core.registry import Registry
from sentidistill.errors import InputError


def test_lazy_import_and_lookup():
    sys.modules.pop("json.tool", None)
    reg = Registry("widget", {"tool": "json.tool:main", "dumps": "json:dumps"})
    assert reg.names() == ["dumps", "tool"] and "tool" in reg
    assert "json.tool" not in sys.modules  # naming a kind imports nothing
    import json

    assert reg.get("dumps") is json.dumps
    assert reg.get("tool") is sys.modules["json.tool"].main


def test_unknown_name_lists_known_ones_and_the_closest():
    reg = Registry("teacher", {"openai": "json:dumps", "llamacpp": "json:loads"})
    with pytest.raises(InputError) as e:
        reg.get("lamacpp")
    msg = str(e.value)
    assert "unknown teacher kind 'lamacpp'" in msg and "did you mean 'llamacpp'" in msg
    assert "one of: llamacpp, openai" in msg
    with pytest.raises(InputError, match="one of: llamacpp, openai") as e:
        reg.check("zzz")
    assert "did you mean" not in str(e.value)


def test_register_refuses_duplicates_and_bad_targets():
    reg = Registry("loss", {"ce": "json:dumps"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("ce", "json:loads")
    reg.register("ce", "json:loads", replace=True)
    import json

    assert reg.get("ce") is json.loads
    with pytest.raises(ValueError, match="module:Attribute"):
        reg.register("kl", "json.loads")
    reg.register("obj", len)
    assert reg.get("obj") is len
