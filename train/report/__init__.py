"""The expert-specialization report of a training run.

    python -m train.report RUN_DIR [--data DIR] [--compare OTHER_RUN ...] [--max-tokens 20000]

Loads RUN_DIR/ckpt.pt (checksum verified) and RUN_DIR/metrics.jsonl (written by
train/moe.py), checks the data (``--skip-verify``: sizes only), routes up to ``--max-tokens``
eval tokens per domain with the training loop's own evaluation, and writes RUN_DIR/report/ (or
``--out``): ``report.md`` (readable on its own, figures linked), ``report.json`` (the numbers
behind every figure) and the PNG figures. Sections: routing fractions, specialization scores
(top-expert share, mutual information, router entropy), the causal expert-removal test, the
OLMoE/Mixtral measures (domain share vs k/E, vocabulary specialization, co-activation, router
saturation, maximum load violation), curves over training (with ``--compare``: several runs on
one plot), token-type routing for code and the format-artifact test.

Modules: config.py (options), routing.py (models and routed eval tokens), sections.py (the
numbers of each section), figures.py (PNGs), markdown.py (report.md), build.py (all of it);
the measures: specialization.py (scores), token_types.py (token-type classes), format_test.py
(the format-artifact test), plots.py (matplotlib, imported lazily).
"""

from train.report.build import build_report, main, print_summary, write_report
from train.report.config import ReportConfig, ReportError, build_parser, parse_args

__all__ = ["ReportConfig", "ReportError", "build_parser", "build_report", "main", "parse_args",
           "print_summary", "write_report"]
