"""`python -m prep.bench`'s settings: one dataclass, its flags derived (help written once)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from typing import Any


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class BenchConfig:
    code_mb: str = _f("60,200,300", "real-code input sizes, MB of text: small (end to end, "
                                    "memory), middle (resume, Ray), large (end to end, memory)")
    mixed_mb: str = _f("50,100", "mixed-input sizes, MB of text (coordinator slope, end to end)")
    file_mb: float = _f(10.0, "MB of text per input file (the many-files shape; the one-file "
                              "shape is the same data as one .jsonl.zst)")
    workers: int = _f(2, "--workers of every prep run and of the peers' pools; the ceilings "
                         "run min(workers, cores) encoder processes at once")
    backend: str = _f("auto", "--tokenizer-backend of the prep runs (the fast encoder whose own "
                              "ceiling is measured beside tiktoken's)")
    peers: str = _f("small,large,one-small,mixed", "inputs the peers run on: small, middle, "
                                                    "large, one-small, one-large, mixed")
    sample_mb: float = _f(5.0, "MB of each timed run's input that one tiktoken process encodes "
                               "right before and right after the run (a disturbed run is "
                               "measured again)")
    ceiling_mb: float = _f(0.0, "MB of text each of the concurrent encoder processes of a "
                                "ceiling encodes (in memory, read before the clock starts); 0: "
                                "its share of the whole input")
    quiet_wait: float = _f(30.0, "seconds to wait before each timed run for the machine's "
                                 "other processes to use < 0.25 cores (the load is reported)")
    quiet_budget: float = _f(600.0, "seconds of such waiting in the whole bench; then none")
    prep_args: str = _f("", "extra flags for every prep run (e.g. \"--partition-mb 8\"); "
                            "default: prep's defaults")
    skip: str = _f("", "comma list of parts to skip: peers, nanogpt, resume, ray, mixed, "
                       "one-file, stages")
    quick: bool = _f(False, "a smoke run of every figure in a few minutes: code 20,40,60 MB, "
                            "no mixed input, no nanoGPT or Ray, fineweb on the small input")
    many_cores: bool = _f(False, "the many-core scaling mode instead (prep.bench.manycores): "
                                 "--mc-workers workers against as many concurrent encoder "
                                 "processes, many files and one .jsonl.zst")
    mc_workers: str = _f("8,16", "--many-cores: the worker counts")
    mc_mb: float = _f(400.0, "--many-cores: MB of real-code text in the input")
    work: str | None = _f(None, "scratch directory (default: a temporary directory; removed)")
    json: str | None = _f(None, "also write every measurement and figure to this JSON file")

    def resolved(self) -> BenchConfig:
        """The settings a mode implies (--quick, --many-cores), where left at their defaults."""
        mode: dict[str, Any] = {}
        if self.quick:
            mode = {"code_mb": "20,40,60", "peers": "small", "sample_mb": 2.0,
                    "skip": ",".join(filter(None, [self.skip, "mixed", "nanogpt", "ray"]))}
        if self.quick or self.many_cores:
            mode.update(quiet_wait=5.0, quiet_budget=60.0)
        default = BenchConfig()
        return replace(self, **{k: v for k, v in mode.items()
                                if k == "skip" or getattr(self, k) == getattr(default, k)})

    @property
    def skipped(self) -> set[str]:
        return {s.strip() for s in self.skip.split(",") if s.strip()}


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prep.bench", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], str)
        p.add_argument(flag, type=kind, default=f.default,
                       help=f"{f.metadata['help']} (default: {f.default})")
    return p
