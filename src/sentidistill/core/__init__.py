"""The bottom layer: what every other package may use and which uses none of them.

``registry`` (kind name -> lazily imported plug-in), ``assets`` (weights shipped in packages, the cache
folder), ``records`` (the typed teacher request/response values that prompts, teachers, bench and serve
exchange). Errors (:mod:`sentidistill.errors`), file helpers (:mod:`sentidistill.utils.io`) and the run
directory (:mod:`sentidistill.rundir`) belong to this layer too (they keep their historical module paths).
"""
