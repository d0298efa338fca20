"""A registry of plug-ins by name, imported lazily: ``kind`` string -> ``"module:attribute"``.

Every plug-in family (students, teacher backends, losses) has one :class:`Registry`. Naming a kind costs
nothing until it is used: :meth:`Registry.get` imports the module then, so a config that asks for the
``openai`` teacher never imports llama.cpp or vLLM. An unknown name is an :class:`InputError` that lists
the known names and the closest match::

    >>> reg = Registry("student", {"seq2seq": "sentidistill.students.seq2seq:Seq2SeqStudent"})
    >>> reg.names()
    ['seq2seq']
    >>> reg.get("seq2sq")  # doctest: +SKIP
    InputError: field 'kind': unknown student kind 'seq2sq'; did you mean 'seq2seq'? (expected one of: seq2seq, got 'seq2sq')
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from sentidistill.errors import InputError


class Registry:
    """Kind names of one plug-in family, each bound to a ``"package.module:Attribute"`` target."""

    def __init__(self, family: str, targets: Mapping[str, str] | None = None, *, field: str = "kind") -> None:
        self.family = family
        self.field = field
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        for name, target in (targets or {}).items():
            self.register(name, target)

    def register(self, name: str, target: str | Any, *, replace: bool = False) -> None:
        """Bind ``name`` to ``"module:Attribute"`` (imported on first use) or to an object directly.

        Raises ``ValueError`` when ``name`` is taken (unless ``replace``) or a target string lacks ``:``.
        """
        if name in self._targets and not replace:
            raise ValueError(f"{self.family} kind {name!r} is already registered ({self._targets[name]})")
        if isinstance(target, str):
            if ":" not in target:
                raise ValueError(f"registry target must be 'module:Attribute', got {target!r}")
            self._targets[name] = target
            self._loaded.pop(name, None)
        else:
            self._targets[name] = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
            self._loaded[name] = target

    def names(self) -> list[str]:
        """The registered kind names, sorted."""
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def target(self, name: str) -> str:
        """The ``"module:Attribute"`` string of ``name`` (no import); unknown names raise :meth:`unknown`."""
        self.check(name)
        return self._targets[name]

    def check(self, name: str) -> str:
        """Return ``name`` when it is registered, else raise the did-you-mean :class:`InputError`."""
        if name not in self._targets:
            raise self.unknown(name)
        return name

    def unknown(self, name: str) -> InputError:
        """The error for an unknown ``name``: the known names and the closest one."""
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return InputError(f"unknown {self.family} kind {name!r}{hint}", field=self.field,
                          expected="one of: " + ", ".join(self.names()), got=name)

    def get(self, name: str) -> Any:
        """The plug-in object registered as ``name``, importing its module on first use."""
        if name in self._loaded:
            return self._loaded[name]
        module_name, _, attr = self.target(name).partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        self._loaded[name] = obj
        return obj
