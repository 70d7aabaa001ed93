"""Measuring one run of `python -m prep.bench`: a quiet machine first, the child process timed
from outside (start-up included), the load of other processes meanwhile, one tokenizer process's
rate just before and after (the run's ceiling), every tool's token ids checked."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.bench import children, peers

if TYPE_CHECKING:
    from prep.bench.__main__ import BenchConfig
    from prep.bench.inputs import Corpus
    from shards.console import Out

QUIET_CORES = 0.25
SPREAD_MAX = 0.08  # the tokenizer samples around a run may differ by this share


@dataclass
class Run:
    """One measured process: tokens, wall seconds (start-up included), others' load."""

    label: str
    tokens: int
    wall: float
    load: float  # CPU cores used by other processes of the machine during the run, on average
    info: dict[str, Any] = field(default_factory=dict)
    ceiling: float = 0.0  # one tokenizer process's tokens per CPU-s, the faster of just before
    ceiling_samples: list[float] = field(default_factory=list)  # ... and just after the run

    @property
    def rate(self) -> float:
        return self.tokens / self.wall

    @property
    def speed(self) -> float:
        """The host's speed around the run: one tokenizer's mean tokens per CPU-s."""
        return sum(self.ceiling_samples) / len(self.ceiling_samples)


class Bench:
    def __init__(self, cfg: BenchConfig, work: Path, out: Out) -> None:
        self.cfg, self.work, self.out = cfg, work, out
        self.cores = os.cpu_count() or 1
        self.runs: dict[str, Run] = {}
        self.ref: dict[str, tuple[int, float, list[str]]] = {}  # file -> tokens, cpu, digests
        self.checks: list[str] = []
        self.context: dict[str, Any] = {}

    # ------------------------------------------------------------------ measuring
    def measure(self, key: str, kind: str, args: list[str], env: dict[str, str] | None = None
                ) -> tuple[int, float, dict[str, Any] | None, float]:
        """Run one child after waiting for a quiet machine; (rc, wall, info, others' load)."""
        self.out.line(f"  measuring {key} ...")
        self._wait_quiet()
        b0, c0 = _busy_s(), _children_cpu_s()
        rc, wall, info = children.run_child(kind, self.work / f"{key}.json", args, env)
        ours = _children_cpu_s() - c0
        load = max(0.0, (_busy_s() - b0 - ours) / wall)
        return rc, wall, info, load

    def bracketed(self, key: str, kind: str, args: list[str], files: list[str],
                  env: dict[str, str] | None = None, reset: Any = None, retry: bool = True
                  ) -> tuple[int, float, dict[str, Any] | None, float, list[float]]:
        """`measure`, with one tokenizer process's rate on the input measured just before and
        just after (the host's speed drifts by +-10% over minutes, and a sample can catch a
        hiccup): (..., [before, after]). The run's ceiling is the faster of the two, which never
        flatters the run. A run that other jobs disturbed (their load above QUIET_CORES, or the
        two samples more than SPREAD_MAX apart) is measured once more (`reset` first)."""
        for attempt in (1, 2):
            if reset is not None:
                reset()
            rates = [self.sample_rate(files)]
            rc, wall, info, load = self.measure(key, kind, args, env)
            rates.append(self.sample_rate(files))
            why = self.disturbed(key, load, rates)
            if not why or not retry or attempt == 2:
                break
            self.out.line(f"  {key} was disturbed ({why}): measuring it again")
        if info is not None:
            info["attempts"], info["disturbed"] = attempt, why
        return rc, wall, info, load, rates

    @staticmethod
    def disturbed(key: str, load: float, rates: list[float]) -> str:
        spread = abs(rates[0] - rates[1]) / max(rates)
        if spread > SPREAD_MAX:
            return (f"one tokenizer's rate {rates[0] / 1e6:.2f} before, {rates[1] / 1e6:.2f} "
                    "after")
        if load > QUIET_CORES and not key.startswith("prep-ray"):  # Ray's own are counted
            return f"other jobs used {load:.2f} cores"
        return ""

    def sample_rate(self, files: list[str], key: str = "sample") -> float:
        spec = {"files": files, "max_mb": self.cfg.sample_mb, "digests": False}
        _, _, info = children.run_child("ceiling", self.work / f"{key}.json", [json.dumps(spec)])
        assert info is not None
        return info["tokens_per_cpu_s"]

    def concurrency(self, files: list[str]) -> dict[str, float]:
        """One tokenizer process alone, then two at once: how far 2 cores are from 2x one."""
        import concurrent.futures as cf

        self._wait_quiet()
        one = self.sample_rate(files)
        with cf.ThreadPoolExecutor(2) as pool:
            two = list(pool.map(lambda k: self.sample_rate(files, f"sample{k}"), range(2)))
        return {"one": one, "two_each": sum(two) / 2}

    def _wait_quiet(self) -> None:
        t = time.perf_counter()
        while time.perf_counter() - t < self.cfg.quiet_wait:
            b0, c0 = _busy_s(), _children_cpu_s()
            time.sleep(1.0)
            if _busy_s() - b0 - (_children_cpu_s() - c0) < QUIET_CORES:
                return

    def ceiling(self, corpus: Corpus) -> None:
        _, _, info, _ = self.measure(f"ceiling-{corpus.name}", "ceiling",
                                     [json.dumps({"files": corpus.files})])
        assert info is not None
        for f in info["files"]:
            self.ref[f["file"]] = (f["tokens"], f["cpu_s"], f["digests"])

    def tokenizer_rate(self, files: list[str]) -> float:
        """One tokenizer process's tokens per CPU-second on these files."""
        return (sum(self.ref[f][0] for f in files) / sum(self.ref[f][1] for f in files))

    def prep(self, key: str, files: list[str], *extra: str, env: dict[str, str] | None = None,
             out_dir: Path | None = None, retry: bool = True) -> Run | None:
        out_dir = out_dir or self.work / f"out-{key}"
        recipe = self.work / f"{key}.toml"
        recipe.write_text(
            "seed = 1\nblock_size = 512\n\n[domains.data]\nsource = \"json\"\n"
            f"data_files = {json.dumps(files)}\ntext_field = \"text\"\nmin_chars = 1\n"
            "max_chars = 1000000000\nsize_mb = 1000000\n")
        args = ["--recipe", str(recipe), "--out", str(out_dir), "--workers",
                str(self.cfg.workers), "--min-eval-docs", "1", "--quiet",
                *self.cfg.prep_args.split(), *extra]
        rc, wall, info, load, rates = self.bracketed(
            key, "prep", args, files, env, reset=None if not retry else lambda: remove(out_dir),
            retry=retry)
        if rc != 0:
            if env and "PREP_KILL_AT" in env and rc == -9:
                return None
            raise RuntimeError(f"prep run {key} failed ({rc}): {(info or {}).get('stderr')}")
        assert info is not None
        manifest = json.loads((out_dir / "manifest.json").read_text())
        info["manifest_run"] = manifest["run"]
        info["docs_kept"] = sum(d["counts"]["docs_kept"] for d in manifest["domains"].values())
        info["shards"] = [s["sha256"] for d in manifest["domains"].values()
                          for s_ in d["splits"].values() for s in s_["shards"]]
        run = Run(key, manifest["run"]["tokens"], wall, load, info, max(rates), rates)
        self._check_ids(key, files, _prep_digests(out_dir, manifest))
        self.runs[key] = run
        return run

    def peer(self, key: str, kind: str, files: list[str]) -> Run:
        folder = self.work / f"out-{key}"
        spec = {"files": files, "workers": self.cfg.workers, "out": str(folder)}
        _, wall, info, load, rates = self.bracketed(
            key, kind, [json.dumps(spec)], files,
            reset=lambda: (remove(folder), folder.mkdir(parents=True)))
        assert info is not None
        if kind == "fineweb":
            tokens = np.concatenate([np.load(p) for p in peers.fineweb_outputs(str(folder))])
            digests = children.stream_digests(tokens, eot_first=True)
        else:
            digests = []
            for p in peers.nanogpt_outputs(str(folder)):
                digests += children.stream_digests(np.fromfile(p, dtype=np.uint16),
                                                     eot_first=False)
        self._check_ids(key, files, digests)
        run = Run(key, info["tokens"], wall, load, info, max(rates), rates)
        self.runs[key] = run
        remove(folder)
        return run

    def _check_ids(self, key: str, files: list[str], digests: list[str]) -> None:
        want = Counter(d for f in files for d in self.ref[f][2])
        got = Counter(digests)
        if got != want:
            missing, extra = sum((want - got).values()), sum((got - want).values())
            raise RuntimeError(f"{key}: token ids differ from tiktoken's: {missing} reference "
                               f"documents not found, {extra} documents not in the reference")
        self.checks.append(f"{key}: {sum(got.values()):,} documents, ids equal to tiktoken's")


def _prep_digests(out_dir: Path, manifest: dict[str, Any]) -> list[str]:
    digests: list[str] = []
    for d in manifest["domains"].values():
        for split in d["splits"].values():
            parts = [np.fromfile(out_dir / s["path"], dtype=np.uint16) for s in split["shards"]]
            if parts:
                digests += children.stream_digests(np.concatenate(parts), eot_first=False)
    return digests


def _busy_s() -> float:
    """CPU-seconds all processes of the machine have used (from /proc/stat), all cores."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime


class RayInstance:
    """A local Ray instance of `cpus` CPUs in a helper process, for runs that join it."""

    def __init__(self, result: Path, cpus: int) -> None:
        self.result, self.cpus = result, cpus

    def __enter__(self) -> str:
        self.proc = subprocess.Popen([sys.executable, "-m", "prep.bench.children", "ray-head",
                                      str(self.result), str(self.cpus)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = time.perf_counter()
        while not self.result.exists():
            if self.proc.poll() is not None or time.perf_counter() - t > 120:
                raise RuntimeError("could not start a Ray instance for the joined-Ray run")
            time.sleep(0.2)
        time.sleep(0.2)  # written, not necessarily flushed: read again if empty
        return json.loads(self.result.read_text())["address"]

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def compile_packages() -> None:
    """Byte-compile prep and shards as an installed package is: every run here imports them in a
    fresh process, and this machine sets PYTHONDONTWRITEBYTECODE=1 (~0.05 s of compiling each)."""
    import compileall

    root = Path(__file__).resolve().parents[2]
    for pkg in ("prep", "shards"):
        compileall.compile_dir(str(root / pkg), quiet=1)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
