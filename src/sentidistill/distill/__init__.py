"""Building the distillation corpora: KnowDist analyses of reviews, ICL prompts + teacher answers (Parquet)."""

from sentidistill.distill.corpus import CORPUS_SCHEMA, CorpusStats, read_corpus, write_corpus
from sentidistill.distill.icl import INSTRUCTION_TEMPLATES, ICLPrompt, build_icl_corpus, build_icl_prompts
from sentidistill.distill.knowdist import PROMPT_TAGS, build_knowdist_corpus, student_source

__all__ = [
    "CORPUS_SCHEMA", "INSTRUCTION_TEMPLATES", "PROMPT_TAGS", "CorpusStats", "ICLPrompt", "build_icl_corpus",
    "build_icl_prompts", "build_knowdist_corpus", "read_corpus", "student_source", "write_corpus",
]
