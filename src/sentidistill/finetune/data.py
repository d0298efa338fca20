"""FSA data for the fine-tuning evaluation: a strict reader, target formatting, subsets, subsampling.

Files are JSON lists (UTF-8, BOM tolerated) of ``{ID, sentence, aspects: [{from, to, target, category,
polarity, opinion_words}]}`` as released with paper 2 (``fsa/atsa/{rest14,laptop14}``,
``fsa/acsa/{rest16,laptop16}``). A bad item raises :class:`InputError` naming the file, the item index
and the field; nothing is dropped silently.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sentidistill.errors import InputError

Task = Literal["atsa", "acsa"]
POLARITIES = ("positive", "neutral", "negative", "conflict")
SPLITS = ("train", "dev", "test", "hard_test")
# The released FSA benchmark: dataset name -> (task, folder under <data_dir>/fsa).
FSA_DATASETS: dict[str, tuple[Task, str]] = {
    "rest14": ("atsa", "atsa/rest14"),
    "laptop14": ("atsa", "atsa/laptop14"),
    "rest16": ("acsa", "acsa/rest16"),
    "laptop16": ("acsa", "acsa/laptop16"),
}
_NULL_TARGETS = (None, "NULL")


@dataclass(frozen=True)
class Aspect:
    target: str | None  # None for implicit (NULL) targets
    category: str | None
    polarity: str
    start: int  # character offsets; 0 when the file gives none (as the paper code does)
    end: int
    opinion_words: tuple[Any, ...] = ()


@dataclass(frozen=True)
class FSAExample:
    id: str
    sentence: str
    aspects: tuple[Aspect, ...]
    split: str = "test"


@dataclass
class FSADataset:
    """One benchmark dataset: its task and its splits (``dev`` may be empty: then it is carved from train)."""

    name: str
    task: Task
    folder: Path
    splits: dict[str, list[FSAExample]] = field(default_factory=dict)

    @property
    def test_set(self) -> list[FSAExample]:
        """The paper's test set: ``test`` followed by ``hard_test`` (when present)."""
        return self.splits.get("test", []) + self.splits.get("hard_test", [])


# -- reading ---------------------------------------------------------------------------------------

def _offset(value: Any, path: Path, where: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError("not a character offset", path=path, field=where, expected="an integer",
                         got=value) from None


def _aspect(raw: Any, sentence: str, task: Task, path: Path, where: str) -> Aspect:
    if not isinstance(raw, dict):
        raise InputError("aspect is not an object", path=path, field=where, expected="a JSON object",
                         got=type(raw).__name__)
    pol = raw.get("polarity")
    if pol not in POLARITIES:
        raise InputError("unknown polarity", path=path, field=f"{where}.polarity",
                         expected=" | ".join(POLARITIES), got=pol)
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        raise InputError("target is not a string", path=path, field=f"{where}.target",
                         expected="a string or null", got=target)
    if target in _NULL_TARGETS:
        target = None
    elif target not in sentence:
        raise InputError("aspect term does not occur in the sentence", path=path, field=f"{where}.target",
                         expected="a substring of 'sentence'", got=target)
    category = raw.get("category")
    if category is not None and not isinstance(category, str):
        raise InputError("category is not a string", path=path, field=f"{where}.category",
                         expected="a string such as FOOD#QUALITY", got=category)
    if task == "acsa" and not category:
        raise InputError("ACSA aspect without a category", path=path, field=f"{where}.category",
                         expected="a string such as FOOD#QUALITY", got=category)
    # ATSA files give one string (or null), ACSA files a list of spans; missing/empty = implicit.
    ow = raw.get("opinion_words") or ()
    if isinstance(ow, str):
        ow = (ow,)
    if not isinstance(ow, list | tuple):
        raise InputError("opinion_words is not a list or a string", path=path, field=f"{where}.opinion_words",
                         expected="a string, a list of spans or null", got=ow)
    return Aspect(target=target, category=category, polarity=pol,
                  start=_offset(raw.get("from"), path, f"{where}.from"),
                  end=_offset(raw.get("to"), path, f"{where}.to"), opinion_words=tuple(ow))


def read_fsa_file(path: str | Path, task: Task, split: str = "test") -> list[FSAExample]:
    """Read one FSA JSON file; every item is validated (see module docstring)."""
    from sentidistill.data.readers import read_json_list

    path = Path(path)
    items = read_json_list(path)
    out: list[FSAExample] = []
    for i, item in enumerate(items):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise InputError("item is not an object", path=path, field=where, expected="a JSON object",
                             got=type(item).__name__)
        sentence = item.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip():
            raise InputError("missing or empty sentence", path=path, field=f"{where}.sentence",
                             expected="a non-empty string", got=sentence)
        aspects = item.get("aspects")
        if not isinstance(aspects, list):
            raise InputError("missing aspects", path=path, field=f"{where}.aspects",
                             expected="a list (possibly empty)", got=aspects)
        out.append(FSAExample(
            id=str(item.get("ID", f"{split}-{i}")), sentence=sentence, split=split,
            aspects=tuple(_aspect(a, sentence, task, path, f"{where}.aspects[{j}]") for j, a in enumerate(aspects)),
        ))
    return out


def resolve_dataset(name: str, data_dir: str | Path | None) -> tuple[str, Task, Path]:
    """``rest14`` | ``atsa/rest14`` | ``atsa:/my/folder`` -> (short name, task, folder)."""
    if ":" in name and name.split(":", 1)[0] in ("atsa", "acsa"):
        task, folder = name.split(":", 1)
        p = Path(folder).expanduser()
        return p.name, task, p  # type: ignore[return-value]
    short = name.split("/")[-1]
    if short not in FSA_DATASETS:
        raise InputError(f"unknown FSA dataset '{name}'",
                         expected=", ".join(FSA_DATASETS) + " or atsa:/path | acsa:/path")
    if data_dir is None:
        raise InputError("no data folder: give --data-dir or set SENTIDISTILL_DATA_DIR", field="data_dir")
    task, rel = FSA_DATASETS[short]
    base = Path(data_dir).expanduser()
    folder = base / "fsa" / rel if (base / "fsa").is_dir() else base / rel
    return short, task, folder


def load_fsa_dataset(name: str, data_dir: str | Path | None = None) -> FSADataset:
    """Load every split that exists in the dataset folder (train and test are required)."""
    short, task, folder = resolve_dataset(name, data_dir)
    if not folder.is_dir():
        raise InputError("dataset folder not found", path=folder, expected="a folder with train.json and test.json")
    ds = FSADataset(name=short, task=task, folder=folder)
    for split in SPLITS:
        f = folder / f"{split}.json"
        if f.is_file():
            ds.splits[split] = read_fsa_file(f, task, split)
        elif split in ("train", "test"):
            raise InputError(f"missing {split} split", path=f)
    return ds


# -- targets and subsets ---------------------------------------------------------------------------

def verbalise_category(category: str) -> str:
    """``FOOD#QUALITY`` -> ``food quality`` (the paper's ACSA target form)."""
    return category.lower().replace("#", " ")


def category_key(text: str) -> str:
    """Comparison key for categories: case, '#' and whitespace do not matter (tokenizers re-space output)."""
    return "".join(text.lower().replace("#", " ").split())


def gold_pairs(ex: FSAExample, task: Task) -> list[tuple[str, str]]:
    """Gold (term|category, polarity) pairs in target order, NULL terms dropped (ATSA), duplicates removed.

    ATSA terms keep the sentence's spelling and are ordered by position; ACSA categories are verbalised
    (``food quality``) in file order.
    """
    pairs: list[tuple[str, str]] = []
    if task == "atsa":
        spans = sorted((a for a in ex.aspects if a.target is not None), key=lambda a: (a.start, a.end))
        for a in spans:
            if (a.target, a.polarity) not in pairs:
                pairs.append((a.target, a.polarity))  # type: ignore[arg-type]
    else:
        for a in ex.aspects:
            p = (verbalise_category(a.category or ""), a.polarity)
            if p not in pairs:
                pairs.append(p)
    return pairs


def format_pairs(pairs: list[tuple[str, str]]) -> str:
    """``[(a, p), (b, q)]`` -> ``a | p ; b | q`` (empty string for a sentence with no aspects)."""
    return " ; ".join(f"{t} | {p}" for t, p in pairs)


def target_text(ex: FSAExample, task: Task) -> str:
    return format_pairs(gold_pairs(ex, task))


def is_implicit(ex: FSAExample) -> bool:
    """Paper-code rule: some aspect (NULL targets included) has no opinion words."""
    return any(not a.opinion_words for a in ex.aspects)


def is_multi_polarity(ex: FSAExample) -> bool:
    """Paper-code rule ("mams"): the sentence's aspects carry more than one distinct polarity."""
    return len({a.polarity for a in ex.aspects}) > 1


def eval_subsets(examples: list[FSAExample]) -> dict[str, list[int]]:
    """Indices into the test set (test + hard_test) of each reported subset."""
    return {
        "all": list(range(len(examples))),
        "test": [i for i, e in enumerate(examples) if e.split == "test"],
        "hard_test": [i for i, e in enumerate(examples) if e.split == "hard_test"],
        "implicit": [i for i, e in enumerate(examples) if is_implicit(e)],
        "multi_polarity": [i for i, e in enumerate(examples) if is_multi_polarity(e)],
    }


# -- train / dev selection -------------------------------------------------------------------------

def train_dev_split(ds: FSADataset, seed: int, train_fraction: float = 1.0,
                    dev_fraction: float = 0.1) -> tuple[list[FSAExample], list[FSAExample]]:
    """The training subset for ``train_fraction`` and the dev set used for checkpoint selection.

    One seeded permutation of the train split is cut at ``ceil(fraction * n)``, so for a given seed the
    smaller fractions are prefixes (subsets) of the larger ones. Where the dataset has no dev split, a
    seeded ``dev_fraction`` of train is carved off first (the same for every fraction).
    """
    if not 0.0 < train_fraction <= 1.0:
        raise InputError("train fraction out of range", field="train_fraction", expected="0 < f <= 1",
                         got=train_fraction)
    train = list(ds.splits["train"])
    dev = list(ds.splits.get("dev", []))
    if not dev:
        carve = random.Random(f"dev-{seed}").sample(range(len(train)), k=max(1, round(dev_fraction * len(train))))
        keep = set(carve)
        dev = [train[i] for i in sorted(carve)]
        train = [e for i, e in enumerate(train) if i not in keep]
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    k = max(1, math.ceil(train_fraction * len(train) - 1e-9))
    return [train[i] for i in order[:k]], dev
