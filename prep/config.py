"""The prep command line as one dataclass: defaults and help written once, the CLI derived.

Every field is a flag (``--size-mb`` for ``size_mb``); its metadata holds the help text. What
changes the output is resolved into the plan's settings (`prep.plan`), whose fingerprint refuses
a `--resume` with any of it changed; how to run (workers, executor, slices) never changes a byte.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from shards.conformance import DEFAULT_CHECK_EVERY
from shards.tokenizer import BACKEND_CHOICES, DEFAULT_BACKEND

DEFAULT_SIZE_MB = 10.0
DEFAULT_EVAL_FRACTION = 0.05
DEFAULT_SHUFFLE_DOCS = 10_000
DEFAULT_SHUFFLE_MB = 32.0
DEFAULT_INTERLEAVE = 8
DEFAULT_PARTITION_MB = 16.0  # ~1.5 s of one tokenizer core per task: small enough to balance
EXECUTORS = ("local", "ray")


def number_problem(name: str, value: Any, *, low: float | None = None, low_open: bool = False,
                   high: float | None = None, high_open: bool = False) -> str | None:
    """The one range check of every number the command line or a recipe gives: None when
    `value` is None or lies in the range; else one line naming `name` (``--size-mb``, or
    ``[domains.code] size_mb``). NaN and the infinities are never in range: a comparison such as
    ``v > 0`` lets NaN through, so finiteness is checked first, for every float."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if low is not None and high is not None:
        ok = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high)
        want = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        ok = low < value if low_open else low <= value
        want = f"{'>' if low_open else '>='} {low:g}"
    else:
        return None
    return None if ok else f"{name} must be {want}, got {value}"


# The range of each number option (number_problem's keywords); a float option without an entry
# is still checked to be finite.
LIMITS: dict[str, dict[str, Any]] = {
    "workers": {"low": 1},
    "num_tasks": {"low": 1},
    "size_mb": {"low": 0, "low_open": True},
    "size_tokens": {"low": 0, "low_open": True},
    "block_size": {"low": 0, "low_open": True},
    "eval_fraction": {"low": 0, "low_open": True, "high": 1, "high_open": True},
    "min_eval_docs": {"low": 0},
    "tokenizer_check_every": {"low": 0},
    "shuffle_buffer": {"low": 0, "low_open": True},
    "shuffle_buffer_mb": {"low": 0, "low_open": True},
    "interleave": {"low": 0, "low_open": True},
    "partition_mb": {"low": 0, "low_open": True},
    "shard_tokens": {"low": 0, "low_open": True},
    "max_bad_fraction": {"low": 0, "high": 1},
}


def _f(default: Any, help: str, *, metavar: str | None = None,
       choices: tuple[str, ...] | None = None, default_factory: Any = None) -> Any:
    meta = {"help": help, "metavar": metavar, "choices": choices}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PrepConfig:
    """The command line, resolved (None: take the recipe's value, else the default)."""

    recipe: str = _f("sample", "built-in recipe name or a TOML recipe file")
    out: str = _f("shards_out", "output directory: manifest.json and the versioned data "
                                "directory it names; the run's work directory lives inside")
    workers: int = _f(None, "worker processes of the local executor (default: the CPU "
                            "count); the output is identical for any number",
                      default_factory=lambda: os.cpu_count() or 1)
    executor: str = _f("local", "where tasks run: 'local' (a process pool of --workers) or "
                                "'ray' (a Ray cluster; pip install -e '.[ray]')",
                       choices=EXECUTORS)
    ray_address: str | None = _f(None, "with --executor ray: the cluster to join ('auto': the "
                                       "running cluster, or host:port); default: start a local "
                                       "Ray instance of --workers CPUs")
    num_tasks: int | None = _f(None, "run only one slice of the plan's tasks (Slurm job arrays, "
                                     "Kubernetes indexed jobs): the number of slices",
                               metavar="N")
    task_index: int | None = _f(None, "with --num-tasks: which slice this process runs "
                                      "(0..N-1); finish the run with --commit-only",
                                metavar="I")
    commit_only: bool = _f(False, "run no planned task: commit and publish once every task "
                                  "of the plan is done (else list the missing ones, exit 1)")
    resume: bool = _f(False, "continue the unfinished run of the same command in --out: its "
                             "finished tasks are checked and kept, the rest is redone")
    overwrite: bool = _f(False, "replace the finished dataset in --out and discard any "
                                "unfinished run there (refused otherwise)")
    size_mb: float | None = _f(None, f"per-domain budget in MB (1e6 bytes) of UTF-8 formatted "
                                     f"text; overrides the recipe (default {DEFAULT_SIZE_MB:g})")
    size_tokens: int | None = _f(None, "per-domain budget in tokens (EOT included); with a byte "
                                       "budget, whichever is reached first ends the domain")
    block_size: int | None = _f(None, "block size for the manifest's block counts (default: "
                                      "the recipe's, 512)")
    seed: int | None = _f(None, "shuffle seed (default: the recipe's); never changes the "
                                "train/eval split")
    eval_fraction: float | None = _f(None, "share of documents whose content hash sends them "
                                           f"to eval (default: the recipe's, else "
                                           f"{DEFAULT_EVAL_FRACTION:g})")
    min_eval_docs: int = _f(20, "fail if a domain ends with fewer eval documents than this")
    shuffle_buffer: int | None = _f(None, "documents held by each task's seeded shuffle buffer "
                                          f"(default {DEFAULT_SHUFFLE_DOCS:,})")
    shuffle_buffer_mb: float | None = _f(None, "... and at most this many MB of text (default "
                                               f"{DEFAULT_SHUFFLE_MB:g})")
    interleave: int | None = _f(None, "a domain's document stream draws at random from this "
                                      "many partitions at a time, so that a sample is not one "
                                      f"file's first documents (default {DEFAULT_INTERLEAVE})")
    partition_mb: float = _f(DEFAULT_PARTITION_MB, "size of one task's input in MB of text: small "
                                                   "files are packed (a compressed file counts 4x "
                                                   "its size), large files (plain, compressed, "
                                                   "Parquet row groups) cut to this")
    shard_tokens: int = _f(1 << 27, "tokens per shard file (a multiple of the block size)")
    tokenizer_file: str | None = _f(None, "GPT-2 BPE ranks in tiktoken format (default: the "
                                          "copy shipped in shards/)")
    tokenizer_backend: str | None = _f(None, "the GPT-2 encoder: 'auto' (the fastest installed "
                                             "one that writes tiktoken's ids on the conformance "
                                             "corpus), 'tiktoken' (the reference), 'gigatoken' "
                                             "or 'fastokens' (pip install 'moe-shards[fast]'); "
                                             "the output is byte-identical with each (default: "
                                             f"the recipe's tokenizer_backend, else "
                                             f"{DEFAULT_BACKEND})", choices=BACKEND_CHOICES)
    tokenizer_check_every: int = _f(DEFAULT_CHECK_EVERY, "with a fast encoder, re-encode 1 in N "
                                                         "documents (chosen by content hash) "
                                                         "with tiktoken and fail the task on any "
                                                         "difference; 0: off", metavar="N")
    max_bad_fraction: float = _f(0.001, "skip and count unreadable records up to this share of "
                                        "a domain; above it the run fails")
    cache_dir: str | None = _f(None, "where downloads (the MathQA ZIP) and the benchmark "
                                     "n-gram index (decontaminate) are kept, on storage every "
                                     "worker sees (default: OUT/.prep-cache)")
    quiet: bool = _f(False, "print nothing but errors")

    def check(self) -> None:
        """One-line errors for values out of range (argparse already checked the types)."""
        bad = [p for f in fields(self) if (p := number_problem(
            "--" + f.name.replace("_", "-"), getattr(self, f.name), **LIMITS.get(f.name, {})))]
        if (self.num_tasks is None) != (self.task_index is None):
            bad.append("--num-tasks and --task-index go together")
        elif self.num_tasks is not None and not 0 <= self.task_index < self.num_tasks:
            bad.append(f"--task-index must be in 0..{self.num_tasks - 1}, got {self.task_index}")
        if self.commit_only and self.num_tasks is not None:
            bad.append("--commit-only runs no slice: drop --num-tasks/--task-index")
        if bad:
            raise ValueError("; ".join(bad))


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" where the help text does not already say its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: {action.default})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prep",
        description="Stream text sources into memory-mapped uint16 GPT-2 token shards, split "
                    "train/eval by a hash of each document's content, and publish them with a "
                    "manifest (OUT/manifest.json, switched atomically). Tasks run in worker "
                    "processes, on a Ray cluster, or as slices of a job array; a killed run "
                    "continues with --resume.",
        formatter_class=_HelpFormatter,
    )
    for f in fields(PrepConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        default = f.default if f.default is not MISSING else f.default_factory()
        if f.type in ("bool",) or isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=meta["help"])
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        p.add_argument(flag, type=kind, default=default, help=meta["help"],
                       metavar=meta["metavar"], choices=meta["choices"])
    return p


def config_from_args(argv: list[str] | None = None) -> PrepConfig:
    args = build_parser().parse_args(argv)
    return PrepConfig(**vars(args))
