"""Measuring one run of `python -m prep.bench`: a quiet machine first (waits capped in all), the
child process timed from outside (start-up included), the load of other processes meanwhile, one
tiktoken process's rate just before and after (a run they disagree on is measured again), every
tool's token ids checked; the concurrent ceilings and the stage split (`prep.bench.ceiling`,
`prep.bench.stages`)."""

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
from prep.bench.ids import stream_digests
from prep.bench.procfs import busy_s

if TYPE_CHECKING:
    from prep.bench.config import BenchConfig
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
    ceiling: float = 0.0  # one tiktoken process's tokens per CPU-s, the faster of just before
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
        self.ceilings: dict[str, dict[str, Any]] = {}  # label -> a concurrent ceiling
        self.stages: dict[str, dict[str, Any]] = {}  # encoder -> a worker's stage split
        self.waited = 0.0  # seconds spent waiting for a quiet machine (capped: quiet_budget)

    # ------------------------------------------------------------------ measuring
    def measure(self, key: str, kind: str, args: list[str], env: dict[str, str] | None = None
                ) -> tuple[int, float, dict[str, Any] | None, float]:
        """Run one child after waiting for a quiet machine; (rc, wall, info, others' load)."""
        self.out.line(f"  measuring {key} ...")
        self._wait_quiet()
        b0, c0 = busy_s(), _children_cpu_s()
        rc, wall, info = children.run_child(kind, self.work / f"{key}.json", args, env)
        ours = _children_cpu_s() - c0
        load = max(0.0, (busy_s() - b0 - ours) / wall)
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

    def _wait_quiet(self) -> None:
        """Until the machine's other processes use < QUIET_CORES, at most quiet_wait seconds,
        and no more once the bench has waited quiet_budget seconds in all."""
        t = time.perf_counter()
        limit = min(self.cfg.quiet_wait, max(0.0, self.cfg.quiet_budget - self.waited))
        try:
            while time.perf_counter() - t < limit:
                b0, c0 = busy_s(), _children_cpu_s()
                time.sleep(1.0)
                if busy_s() - b0 - (_children_cpu_s() - c0) < QUIET_CORES:
                    return
        finally:
            self.waited += time.perf_counter() - t

    def concurrent(self, label: str, files: list[str], procs: int, backend: str
                   ) -> dict[str, Any]:
        """`procs` encoder processes at once on `files`' text (`prep.bench.ceiling`)."""
        spec = {"files": files, "procs": procs, "backend": backend,
                "max_mb": self.cfg.ceiling_mb}
        _, _, info, load = self.measure(f"ceiling-{label}", "concurrent", [json.dumps(spec)])
        assert info is not None
        info["load"] = load
        self.ceilings[label] = info
        return info

    def stage_split(self, files: list[str], backend: str) -> dict[str, Any]:
        spec = {"files": files, "backend": backend}
        _, _, info, _ = self.measure(f"stages-{backend}", "stages", [json.dumps(spec)])
        assert info is not None
        self.stages[info["encoder"]] = info
        return info

    def ceiling(self, corpus: Corpus, procs: int = 1) -> None:
        """tiktoken's ids of every document (the reference) and its CPU-s per file; with
        `procs`, that many processes at once, each on every procs-th file."""
        import concurrent.futures as cf

        procs = max(1, min(procs, len(corpus.files)))  # no process without a file

        def one(k: int) -> dict[str, Any] | None:
            spec = {"files": corpus.files[k::procs]}
            return children.run_child("ceiling", self.work / f"ceiling-{corpus.name}-{k}.json",
                                      [json.dumps(spec)])[2]

        self.out.line(f"  measuring ceiling-{corpus.name} (tiktoken's reference ids) ...")
        with cf.ThreadPoolExecutor(procs) as pool:
            for info in pool.map(one, range(procs)):
                assert info is not None
                for f in info["files"]:
                    self.ref[f["file"]] = (f["tokens"], f["cpu_s"], f["digests"])

    def alias(self, one: str, parts: list[str]) -> None:
        """`one` holds the documents of `parts`, in order (the one-file shape)."""
        refs = [self.ref[f] for f in parts]
        self.ref[one] = (sum(r[0] for r in refs), sum(r[1] for r in refs),
                         [d for r in refs for d in r[2]])

    def tokenizer_rate(self, files: list[str]) -> float:
        """One tokenizer process's tokens per CPU-second on these files."""
        return (sum(self.ref[f][0] for f in files) / sum(self.ref[f][1] for f in files))

    def prep(self, key: str, files: list[str], *extra: str, env: dict[str, str] | None = None,
             out_dir: Path | None = None, retry: bool = True, workers: int | None = None
             ) -> Run | None:
        out_dir = out_dir or self.work / f"out-{key}"
        recipe = self.work / f"{key}.toml"
        recipe.write_text(
            "seed = 1\nblock_size = 512\n\n[domains.data]\nsource = \"json\"\n"
            f"data_files = {json.dumps(files)}\ntext_field = \"text\"\nmin_chars = 1\n"
            "max_chars = 1000000000\nsize_mb = 1000000\n")
        args = ["--recipe", str(recipe), "--out", str(out_dir), "--workers",
                str(workers or self.cfg.workers), "--min-eval-docs", "1", "--quiet",
                "--tokenizer-backend", self.cfg.backend, *self.cfg.prep_args.split(), *extra]
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
            digests = stream_digests(tokens, eot_first=True)
        else:
            digests = []
            for p in peers.nanogpt_outputs(str(folder)):
                digests += stream_digests(np.fromfile(p, dtype=np.uint16), eot_first=False)
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
                digests += stream_digests(np.concatenate(parts), eot_first=False)
    return digests


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
