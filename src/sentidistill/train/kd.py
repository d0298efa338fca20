"""Deprecated, removed in 0.3 (importing it warns). Moved: token alignment is :mod:`sentidistill.train.align`, the top-k KL is :mod:`sentidistill.train.losses`."""

from sentidistill.train.align import KDStats, TokenMapper, align_example, parse_teacher_logprobs
from sentidistill.train.losses import topk_kl
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.train.kd", "sentidistill.train.align and sentidistill.train.losses")

__all__ = ["KDStats", "TokenMapper", "align_example", "parse_teacher_logprobs", "topk_kl"]
