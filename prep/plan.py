"""The plan: a run as a deterministic list of tasks that depends only on the input.

Planning loads the recipe, applies the command line, opens every domain's reader (so that a
missing file or an unreachable Hub fails now, not after hours of work) and lists each source's
partitions. The task list, the document order (`prep.order`) and the run's **fingerprint** (a
hash of every setting that changes the output, and of the input's identity: file sizes and
mtimes, Hub revisions) never depend on --workers, the executor, the machine count or a resume.
What the pipeline's components build at plan time (`prep.steps.prepare`: the benchmark n-gram
index, in the run's cache directory) is described in each domain's `cfg.prepared`, which the
fingerprint covers. The fingerprint names the run's work directory, so a resumed run finds its
finished tasks and a changed command finds none of them (and is told what differs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prep import order
from prep import steps as registry
from prep.config import PrepConfig
from prep.readers import Partition, ReadSettings, open_reader, pieces
from prep.recipe import DomainConfig, Recipe, load_recipe
from prep.task import DomainSettings, TaskSpec
from shards.format import TokenizerRecord
from shards.tokenizer import (
    DEFAULT_BACKEND,
    BackendChoice,
    TokenizerError,
    probe_backend,
    reference_encoder,
    tokenizer_record,
)

PLAN_FORMAT = 1
CAP_SLACK = 2.0  # a capped task reads this many times its share of the budget at first
CACHE_DIR_NAME = ".prep-cache"


class PlanError(ValueError):
    """Settings that cannot make a run; the message names the flag or key and the fix."""


@dataclass
class DomainPlan:
    cfg: DomainConfig  # resolved
    settings: DomainSettings
    partitions: list[Partition]  # natural order
    order: list[int]  # partition indices in the seeded order
    source: dict[str, Any]  # the reader's description (manifest `source`)
    format_rules: list[str]
    notes: list[str]
    cap_bytes: int | None  # level-0 caps of this domain's tasks
    cap_tokens: int | None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def budget_bytes(self) -> int | None:
        return None if self.cfg.size_mb is None else int(self.cfg.size_mb * 1e6)

    @functools.cached_property
    def groups(self) -> list[list[int]]:
        """Partition indices of each interleave group, in order."""
        k = self.cfg.interleave
        return [self.order[i:i + k] for i in range(0, len(self.order), k)]

    def task(self, partition: int, level: int = 0, piece: int = 0) -> TaskSpec:
        """A partition's task at a cap level; for a stream partition, one piece's."""
        p = self.partitions[partition]
        spec = TaskSpec(self.name, pieces.piece_of(p, piece) if p.stream else p, 0,
                        self.cap_bytes, self.cap_tokens)
        for _ in range(level):
            spec = spec.next_level()
        return spec


@dataclass
class Plan:
    recipe: Recipe
    seed: int
    block_size: int
    shard_tokens: int
    tokenizer: TokenizerRecord
    domains: list[DomainPlan]
    settings: dict[str, Any]  # flattened output-affecting settings
    inputs: dict[str, str]  # "domain:partition key" -> input identity
    fingerprint: str
    backend: BackendChoice | None = None  # the encoder workers here use (not fingerprinted)

    def initial_tasks(self) -> list[TaskSpec]:
        """Every partition's first task (a stream partition's first piece), domain by domain in
        the seeded partition order: the static plan that `--num-tasks` slices (by position
        modulo the slice count; a stream's later pieces follow its first: `prep.executors.
        array`)."""
        return [d.task(p) for d in self.domains for p in d.order]

    def use_spill_dir(self, path: str) -> None:
        """Where this run's cutter spills stream pieces: told to every task (`ReadSettings`)."""
        for d in self.domains:
            d.settings = replace(d.settings, read=replace(d.settings.read, spill_dir=path))

    def state(self) -> dict[str, Any]:
        """What plan.json records: enough to name what differs on a refused resume."""
        return {"plan_format": PLAN_FORMAT, "fingerprint": self.fingerprint,
                "settings": self.settings, "inputs": self.inputs,
                "tasks": len(self.initial_tasks())}


def make_plan(cfg: PrepConfig) -> Plan:
    try:
        cfg.check()
    except ValueError as e:
        raise PlanError(str(e)) from e
    recipe = load_recipe(cfg.recipe)
    seed = cfg.seed if cfg.seed is not None else recipe.seed
    block_size = cfg.block_size if cfg.block_size is not None else recipe.block_size
    if cfg.shard_tokens % block_size:
        raise PlanError(f"--shard-tokens {cfg.shard_tokens} must be a multiple of the block size "
                        f"{block_size}, so that no block straddles two shards")
    reference_encoder(cfg.tokenizer_file)  # a bad ranks file fails here; workers inherit it
    tok = tokenizer_record(cfg.tokenizer_file)
    requested = cfg.tokenizer_backend or recipe.tokenizer_backend or DEFAULT_BACKEND
    try:  # an explicit backend missing or refused fails here, in one line
        backend = probe_backend(requested, cfg.tokenizer_file)
    except TokenizerError as e:
        raise PlanError(str(e)) from e
    cache = str(Path(cfg.cache_dir or Path(cfg.out) / CACHE_DIR_NAME).resolve())
    read = ReadSettings(partition_bytes=int(cfg.partition_mb * 1e6), cache_dir=cache)
    ctx = registry.PrepareContext(
        recipe.path or recipe.name, Path(recipe.path).parent if recipe.path else Path.cwd(),
        Path(cache), cfg.tokenizer_file, tok.ranks_sha256, {})
    domains = []
    for d in recipe.domains:
        dcfg = d.resolved(cfg)
        try:  # shared resources built once, in the coordinator (`prep.steps.prepare`)
            dcfg.prepared = registry.prepare(dcfg, ctx)
        except ValueError as e:
            raise PlanError(str(e)) from e
        reader = open_reader(dcfg, read)  # fails fast: missing files, unreachable Hub, bad ZIP
        partitions = reader.partitions()
        st = DomainSettings(dcfg, ReadSettings(read.partition_bytes, read.cache_dir, False),
                            seed, recipe.split_salt, cfg.tokenizer_file, cfg.max_bad_fraction,
                            # auto that fell back: the workers need not try again
                            "tiktoken" if backend.name == "tiktoken" else requested,
                            cfg.tokenizer_check_every)
        k = max(1, min(dcfg.interleave, len(partitions)))
        budget_b = None if dcfg.size_mb is None else dcfg.size_mb * 1e6
        domains.append(DomainPlan(
            cfg=dcfg, settings=st, partitions=partitions,
            order=order.permutation(f"{seed}:{dcfg.name}:partitions", len(partitions)),
            source=reader.describe(), format_rules=reader.format_rules(), notes=reader.notes(),
            cap_bytes=None if budget_b is None else math.ceil(CAP_SLACK * budget_b / k),
            cap_tokens=(None if dcfg.size_tokens is None
                        else math.ceil(CAP_SLACK * dcfg.size_tokens / k))))
    settings: dict[str, Any] = {
        "seed": seed, "block_size": block_size, "split_salt": recipe.split_salt,
        "shard_tokens": cfg.shard_tokens, "partition_mb": cfg.partition_mb,
        "tokenizer.ranks_sha256": tok.ranks_sha256, "domains": [d.name for d in domains],
    }
    settings.update({k: domains[0].cfg.options[k] for k in registry.top_options()})
    for d in domains:
        for key, value in d.cfg.to_dict().items():
            if key != "name":
                settings[f"domains.{d.name}.{key}"] = value
        settings.update(_flat(f"domains.{d.name}.prepared", d.cfg.prepared))
    inputs = {f"{d.name}:{p.key}": p.identity for d in domains for p in d.partitions}
    blob = json.dumps({"plan_format": PLAN_FORMAT, "settings": settings, "inputs": inputs},
                      sort_keys=True)
    return Plan(recipe=recipe, seed=seed, block_size=block_size, shard_tokens=cfg.shard_tokens,
                tokenizer=tok, domains=domains, settings=settings, inputs=inputs,
                fingerprint=hashlib.sha256(blob.encode()).hexdigest(), backend=backend)


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """Nested mappings as dotted keys (so a refused resume names the leaf that differs)."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}", sub).items()}


def describe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two plan states (plan.json), one short line per difference."""
    out = []
    a, b = old.get("settings", {}), new.get("settings", {})
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {_short(a.get(key))} -> {_short(b.get(key))}")
    ia, ib = old.get("inputs", {}), new.get("inputs", {})
    changed = sorted(k for k in ia.keys() & ib.keys() if ia[k] != ib[k])
    gone, added = sorted(ia.keys() - ib.keys()), sorted(ib.keys() - ia.keys())
    for label, keys in (("input changed", changed), ("input gone", gone),
                        ("input added", added)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            out.append(f"{label}: {', '.join(keys[:3])}{more}")
    return out


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."
