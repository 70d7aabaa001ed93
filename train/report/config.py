"""The report's options: one dataclass, from which the command line is derived."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from train.cli import build_parser as _build_parser
from train.cli import from_namespace, opt
from train.report.format_test import DEFAULT_THRESHOLD


class ReportError(ValueError):
    """A run directory, checkpoint or option the report cannot use."""


@dataclass
class ReportConfig:
    run_dir: str = opt(positional=True, help="run directory of train/moe.py (holds ckpt.pt and "
                                             "metrics.jsonl)")
    data: str | None = opt(None, help="dataset directory (python -m prep output) to evaluate "
                                      "on; default: the data_dir recorded in the checkpoint")
    compare: list[str] = opt([], metavar="OTHER_RUN",
                             help="other run directories whose metrics.jsonl curves go on the "
                                  "same plots (e.g. dense, no-load-balancing, top-2)")
    out: str | None = opt(None, help="output directory (default: RUN_DIR/report)")
    max_tokens: int = opt(20000, help="eval tokens per domain to route (also caps the "
                                      "token-type and format tests); lower it for a quicker "
                                      "report")
    batch_size: int = opt(8, help="sequences per forward pass")
    seed: int = opt(0, help="seed of the random-expert choice in the causal test")
    early_ckpt: list[str] = opt([], action="append", metavar="PATH",
                                help="an earlier checkpoint of the same run for router "
                                     "saturation (repeatable; RUN_DIR/ckpt_*.pt are used too)")
    code_domain: str = opt("code", help="the domain whose documents are Python source "
                                        "(token-type routing)")
    format_threshold: float = opt(DEFAULT_THRESHOLD,
                                  help="format-test verdict rule: 'format' if the mean format "
                                       "shift >= this x the mean between-domain distance")
    no_causal: bool = opt(False, help="skip the expert-removal test (the slowest part)")
    no_plots: bool = opt(False, help="write report.md/report.json without figures (no "
                                     "matplotlib needed)")
    skip_verify: bool = opt(False, help="open the data checking paths and sizes only; by "
                                        "default every token id and sha256 is checked first "
                                        "(files unchanged since the last check are skipped)")
    dpi: int = opt(80, help="PNG resolution")
    device: str = opt("cpu", help="torch device for the forward passes (cpu, cuda, cuda:N)")


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(ReportConfig, prog="python -m train.report",
                         description="Write the expert-specialization report of a train/moe.py "
                                     "run into RUN_DIR/report/ (report.md, report.json, PNG "
                                     "figures).")


def parse_args(argv: list[str] | None = None) -> ReportConfig:
    cfg = from_namespace(ReportConfig, build_parser().parse_args(argv))
    if cfg.max_tokens < 1:
        raise ReportError("--max-tokens must be >= 1")
    if cfg.batch_size < 1:
        raise ReportError("--batch-size must be >= 1")
    if cfg.format_threshold <= 0:
        raise ReportError("--format-threshold must be > 0")
    return cfg
