"""Paper 2's evaluation: fine-tune a student on fine-grained sentiment analysis over seeds, with statistics.

``run_finetune_eval(models={"base": SPEC, "distilled": SPEC}, datasets=["rest14"], seeds=[42, 52, 62])``
fine-tunes each model per dataset, training fraction and seed (in parallel, resumable), scores micro-F1
on test + hard_test and its subsets, and reports mean ± std and paired differences with intervals.
"""

from sentidistill.finetune.data import FSA_DATASETS, FSADataset, FSAExample, load_fsa_dataset, read_fsa_file
from sentidistill.finetune.metrics import micro_f1, parse_pairs, score_predictions
from sentidistill.finetune.stats import PairedDifference, bootstrap_ci, mean_std, paired_difference

__all__ = [
    "DEFAULT_SEEDS", "FSA_DATASETS", "PAPER_SEEDS", "FSADataset", "FSAExample", "FinetuneResults", "FinetuneSettings",
    "PairedDifference", "bootstrap_ci", "finetune_report_section", "load_fsa_dataset", "load_results",
    "mean_std", "micro_f1", "paired_difference", "parse_pairs", "read_fsa_file", "run_finetune", "run_finetune_eval",
    "score_predictions",
]


_RUNNER_NAMES = {"DEFAULT_SEEDS", "PAPER_SEEDS", "FinetuneResults", "FinetuneSettings", "load_results", "run_finetune",
                 "run_finetune_eval"}


def __getattr__(name: str):
    # The runner pulls in transformers' Trainer and peft (~8 s); keep `sentidistill --help` fast.
    if name in _RUNNER_NAMES:
        from sentidistill.finetune import runner

        return getattr(runner, name)
    raise AttributeError(name)


def finetune_report_section(results, **kw):  # lazy: matplotlib only when a report is built
    """(markdown, html) of a fine-tuning run; see :mod:`sentidistill.finetune.report`."""
    from sentidistill.finetune.report import finetune_report_section as _section

    return _section(results, **kw)
