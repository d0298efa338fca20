"""Deprecated, removed in 0.3 (importing it warns). Moved: shared-vocabulary alignment is in :mod:`sentidistill.train.align`, the top-k KL (one function,
returning ``(kl, n)`` for ``[N, V]`` and ``[B, T, V]`` logits alike) in :mod:`sentidistill.train.losses`."""

from sentidistill.train.align import (
    PROBE_TEXTS,
    TopKIds,
    VocabIndex,
    VocabKDStats,
    _byte_encoder,
    align_example_exact,
    align_shared_vocab,
    map_corpus_topk,
    map_teacher_topk_to_ids,
    tokenizer_difference,
    tokenizers_identical,
)
from sentidistill.train.losses import topk_kl
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.train.vocab_kd", "sentidistill.train.align and sentidistill.train.losses")

__all__ = ["PROBE_TEXTS", "TopKIds", "VocabIndex", "VocabKDStats", "_byte_encoder", "align_example_exact",
           "align_shared_vocab", "map_corpus_topk", "map_teacher_topk_to_ids", "tokenizer_difference",
           "tokenizers_identical", "topk_kl"]
