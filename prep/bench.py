"""`python -m prep.bench`: prep's speed and memory, each figure a ratio against a baseline
measured in the same run (issue 8, "Speed and memory").

Inputs (`prep.bench_inputs`): real code (the stdlib's .py files repeated, each copy distinct) as
several JSONL.zst files, read at three sizes (a prefix of the files), and the old bench's mixed
code/prose-like input at two. Every run is a fresh process (`prep.bench_runs`), timed from
outside, start-up included; prep runs as ``python -m prep --workers W`` with default settings.

1. coordinator cost: the coordinator's CPU-s per million tokens, the slope between two sizes
   (start-up cancels), against one tokenizer process's CPU-s per million tokens (the ceiling
   run); their ratio is the number of tokenizer cores the coordinator can feed (goal >= 32);
2. end to end: prep's tokens/s (wall, start-up included) against the ceiling: one process's
   tiktoken `encode_ordinary` tokens/s on the same documents x min(workers, cores) (>= 0.85);
3. peers, same input: build-nanogpt's `fineweb.py` pattern (Pool.imap, >= 1.5x its tokens/s)
   and nanoGPT's `prepare.py` pattern (datasets map + memmap); every tool's token ids checked
   against the ceiling's, document by document;
4. resume: a run killed after half its tasks (PREP_KILL_AT), then `--resume`, timed alone,
   against the full run (<= 0.6);
5. Ray: `--executor ray` (a local instance, start-up included) against the local executor (<= 1.3);
6. memory: peak RSS of the coordinator and of each worker at two sizes (no growth: <= 1.1x), and
   the commit's dedup state in bytes per kept document (<= 24).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from prep import bench_runs
from prep.bench_inputs import Corpus, write_code, write_mixed
from shards.console import Out

QUIET_CORES = 0.25


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class BenchConfig:
    code_mb: str = _f("60,200,300", "real-code input sizes, MB of text: small (end to end, "
                                    "memory), middle (resume, Ray), large (end to end, memory)")
    mixed_mb: str = _f("50,100", "mixed-input sizes, MB of text (coordinator slope, end to end)")
    file_mb: float = _f(10.0, "MB of text per input file")
    workers: int = _f(2, "--workers of every prep run and of the peers' pools")
    peers: str = _f("small,large,mixed", "inputs the peers run on: small, middle, large, mixed")
    sample_mb: float = _f(5.0, "MB of each timed run's input that one tokenizer process encodes "
                               "right before and right after the run: the run's ceiling")
    quiet_wait: float = _f(30.0, "seconds to wait before each timed run for the machine's "
                                 "other processes to use < 0.25 cores (the load is reported)")
    prep_args: str = _f("", "extra flags for every prep run (e.g. \"--partition-mb 8\"); "
                            "default: prep's defaults")
    skip: str = _f("", "comma list of parts to skip: peers, nanogpt, resume, ray, mixed")
    work: str | None = _f(None, "scratch directory (default: a temporary directory; removed)")
    json: str | None = _f(None, "also write every measurement and figure to this JSON file")


@dataclass
class Run:
    """One measured process: tokens, wall seconds (start-up included), others' load."""

    label: str
    tokens: int
    wall: float
    load: float  # CPU cores used by other processes of the machine during the run, on average
    info: dict[str, Any] = field(default_factory=dict)
    ceiling: float = 0.0  # one tokenizer process's tokens per CPU-s just before and after

    @property
    def rate(self) -> float:
        return self.tokens / self.wall


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
        rc, wall, info = bench_runs.run_child(kind, self.work / f"{key}.json", args, env)
        ours = _children_cpu_s() - c0
        load = max(0.0, (_busy_s() - b0 - ours) / wall)
        return rc, wall, info, load

    def bracketed(self, key: str, kind: str, args: list[str], files: list[str],
                  env: dict[str, str] | None = None
                  ) -> tuple[int, float, dict[str, Any] | None, float, float]:
        """`measure`, with one tokenizer process's rate on the input measured just before and
        just after (the host's speed drifts by +-10% over minutes): (..., ceiling)."""
        rates = [self.sample_rate(files)]
        rc, wall, info, load = self.measure(key, kind, args, env)
        rates.append(self.sample_rate(files))
        return rc, wall, info, load, sum(rates) / 2

    def sample_rate(self, files: list[str], key: str = "sample") -> float:
        spec = {"files": files, "max_mb": self.cfg.sample_mb, "digests": False}
        _, _, info = bench_runs.run_child("ceiling", self.work / f"{key}.json",
                                          [json.dumps(spec)])
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
             out_dir: Path | None = None) -> Run | None:
        out_dir = out_dir or self.work / f"out-{key}"
        recipe = self.work / f"{key}.toml"
        recipe.write_text(
            "seed = 1\nblock_size = 512\n\n[domains.data]\nsource = \"json\"\n"
            f"data_files = {json.dumps(files)}\ntext_field = \"text\"\nmin_chars = 1\n"
            "max_chars = 1000000000\nsize_mb = 1000000\n")
        args = ["--recipe", str(recipe), "--out", str(out_dir), "--workers",
                str(self.cfg.workers), "--min-eval-docs", "1", "--quiet", *self.cfg.prep_args.split(), *extra]
        rc, wall, info, load, ceiling = self.bracketed(key, "prep", args, files, env)
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
        run = Run(key, manifest["run"]["tokens"], wall, load, info, ceiling)
        self._check_ids(key, files, _prep_digests(out_dir, manifest))
        self.runs[key] = run
        return run

    def peer(self, key: str, kind: str, files: list[str]) -> Run:
        folder = self.work / f"out-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = {"files": files, "workers": self.cfg.workers, "out": str(folder)}
        _, wall, info, load, ceiling = self.bracketed(key, kind, [json.dumps(spec)], files)
        assert info is not None
        if kind == "fineweb":
            tokens = np.concatenate([np.load(p) for p in bench_runs.fineweb_outputs(str(folder))])
            digests = bench_runs.stream_digests(tokens, eot_first=True)
        else:
            digests = []
            for p in bench_runs.nanogpt_outputs(str(folder)):
                digests += bench_runs.stream_digests(np.fromfile(p, dtype=np.uint16),
                                                     eot_first=False)
        self._check_ids(key, files, digests)
        run = Run(key, info["tokens"], wall, load, info, ceiling)
        self.runs[key] = run
        _remove(folder)
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
                digests += bench_runs.stream_digests(np.concatenate(parts), eot_first=False)
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


class _RayInstance:
    """A local Ray instance of `cpus` CPUs in a helper process, for runs that join it."""

    def __init__(self, result: Path, cpus: int) -> None:
        self.result, self.cpus = result, cpus

    def __enter__(self) -> str:
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "prep.bench_runs", "ray-head",
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


def _compile_packages() -> None:
    """Byte-compile prep and shards as an installed package is: every run here imports them in a
    fresh process, and this machine sets PYTHONDONTWRITEBYTECODE=1 (~0.05 s of compiling each)."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for pkg in ("prep", "shards"):
        compileall.compile_dir(str(root / pkg), quiet=1)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the run


def run_all(cfg: BenchConfig, work: Path, out: Out) -> dict[str, Any]:
    from prep.bench_figures import figures, print_figures

    skip = {s.strip() for s in cfg.skip.split(",") if s.strip()}
    small, mid, large = (float(x) for x in cfg.code_mb.split(","))
    mixed_sizes = [float(x) for x in cfg.mixed_mb.split(",")]
    b = Bench(cfg, work, out)
    t0 = time.perf_counter()
    _compile_packages()
    code = write_code(work / "code", large, cfg.file_mb)
    out.line(f"input: real code, {sum(code.mb):.0f} MB of text in {len(code.files)} files "
             f"({sum(os.path.getsize(f) for f in code.files) / 1e6:.0f} MB as .jsonl.zst), "
             f"{time.perf_counter() - t0:.1f}s")
    mixed = None
    if "mixed" not in skip:
        mixed = write_mixed(work / "mixed", max(mixed_sizes), cfg.file_mb)
        out.line(f"input: mixed, {sum(mixed.mb):.0f} MB of text in {len(mixed.files)} files")
    inputs = {"small": code.prefix(small), "middle": code.prefix(mid), "large": code.prefix(large)}
    if mixed is not None:
        inputs["mixed-small"] = mixed.prefix(min(mixed_sizes))
        inputs["mixed"] = mixed.prefix(max(mixed_sizes))
    b.ceiling(code)
    if mixed is not None:
        b.ceiling(mixed)
    b.context["concurrency"] = b.concurrency(code.files[:1])
    for name in inputs:
        b.prep(f"prep-{name}", inputs[name])
        _remove(work / f"out-prep-{name}")
    if "peers" not in skip:
        for name in (p.strip() for p in cfg.peers.split(",") if p.strip()):
            if name in inputs:
                b.peer(f"fineweb-{name}", "fineweb", inputs[name])
                if "nanogpt" not in skip:
                    b.peer(f"nanogpt-{name}", "nanogpt", inputs[name])
    if "resume" not in skip:
        full = b.runs["prep-middle"]
        tasks = full.info["manifest_run"]["tasks_done"]
        if tasks < 2:
            raise RuntimeError(f"the resume figure needs a run of >= 2 tasks, the middle input "
                               f"made {tasks}: raise --code-mb or lower --partition-mb")
        folder = work / "out-resume"
        killed = b.prep("prep-killed", inputs["middle"], out_dir=folder,
                        env={**os.environ, "PREP_KILL_AT": f"after-task:{tasks // 2}"})
        if killed is not None:
            raise RuntimeError("the run meant to be killed half way finished")
        resumed = b.prep("prep-resumed", inputs["middle"], "--resume", out_dir=folder)
        assert resumed is not None
        resumed.info["killed_after_tasks"] = tasks // 2
        resumed.info["identical_to_full"] = resumed.info["shards"] == full.info["shards"]
        _remove(folder)
    if "ray" not in skip:
        b.prep("prep-ray", inputs["middle"], "--executor", "ray")
        _remove(work / "out-prep-ray")
        with _RayInstance(work / "ray-head.json", cfg.workers) as address:
            b.prep("prep-ray-joined", inputs["middle"], "--executor", "ray", "--ray-address",
                   address, env={**os.environ, "RAY_AUTH_MODE": "token"})  # as the head has
        _remove(work / "out-prep-ray-joined")
    sizes = {k: sum(b.ref[f][0] for f in v) for k, v in inputs.items()}
    result = figures(b, inputs, sizes, {"code": code, "mixed": mixed}, time.perf_counter() - t0)
    print_figures(out, result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prep.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(BenchConfig):
        kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], str)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                       help=f"{f.metadata['help']} (default: {f.default})")
    return p


def main(argv: list[str] | None = None) -> int:
    cfg = BenchConfig(**vars(build_parser().parse_args(argv)))
    out = Out()
    if cfg.work:
        Path(cfg.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.work, prefix="prep-bench-") as tmp:
        result = run_all(cfg, Path(tmp), out)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps({"config": asdict(cfg), **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
