"""Test-only pipeline components (`prep.steps`), each one class and one recipe key, and a
corpus that exercises them: what the steps' tests register and run prep with."""

from __future__ import annotations

import functools
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
from prep_fixture import WORDS, write_jsonl, write_recipe

import shards
from prep.steps import Column, CommitHook, Counters, Doc, Filter, Group, Option, Step, TaskError


class DropMarked(Filter):
    """The issue's example: drops documents containing a marker word, counted in total and
    per word (a keyed count, as decontamination counts per benchmark file)."""

    name, order = "drop_marked", 150  # after length_filter, before the shuffle
    options = {"drop_markers": Option(list[str], [], "drop documents containing any of these")}
    counters = ("docs_marked",)
    needs = ("text",)

    @classmethod
    def enabled(cls, cfg: Any) -> bool:
        return bool(cfg.options["drop_markers"])

    @classmethod
    def check(cls, cfg: Any) -> None:
        if any(not w.strip() for w in cfg.options["drop_markers"]):
            raise ValueError("drop_markers: an empty word would drop every document")

    @classmethod
    def counter_names(cls, cfg: Any) -> tuple[str, ...]:
        return ("docs_marked", *(f"docs_marked:{w}" for w in cfg.options["drop_markers"]))

    def drop(self, doc: Doc) -> str | None:
        for w in self.settings.cfg.options["drop_markers"]:
            if w in doc.text:
                self.count(f"docs_marked:{w}")
                return "docs_marked"
        return None


FAMILY = re.compile(r"\bfam(\d+)\b")


class FamilyTag(Step):
    """A worker step after tokenize that stores a shaped per-document column (as a near-dup
    signature would): [1, family id] for documents tagged ``famN``, else [0, 0]."""

    name, order = "family_tag", 450
    needs = ("text", "tokens")  # placed after tokenize, so it may read token ids

    @classmethod
    def enabled(cls, cfg: Any) -> bool:
        return cfg.options["family_mode"] is not None

    @classmethod
    def columns(cls, cfg: Any) -> dict[str, Column]:
        return {"family": Column("<i8", (2,))}

    def run(self, docs: Any) -> Any:
        for doc in docs:
            assert doc.tokens is not None and len(doc.tokens) > 1
            m = FAMILY.search(doc.text)
            doc.columns["family"] = (1, int(m.group(1))) if m else (0, 0)
            yield doc


class FamilyHook(CommitHook):
    """A commit hook over the steps' column, across tasks and domains (as near-dup clusters):
    `remove` keeps the first member of a family in plan order; `group` keeps every member but
    gives it the split of the family's first member."""

    name, order = "family", 10  # after exact_dedup
    options = {"family_mode": Option(str | None, None, "remove or group")}

    @classmethod
    def enabled(cls, cfg: Any) -> bool:
        return cfg.options["family_mode"] is not None

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.options["family_mode"] not in (None, "remove", "group"):
            raise ValueError(f"family_mode must be remove or group, got "
                             f"{cfg.options['family_mode']!r}")

    @classmethod
    def counter_names(cls, cfg: Any) -> tuple[str, ...]:
        sizes = tuple(f"families_of_size:{n}" for n in (1, 2, 3))  # a histogram, at the end
        return ("docs_family_removed" if cfg.options["family_mode"] == "remove" else
                "docs_family_moved", *sizes)

    def __init__(self, plan: Any) -> None:
        super().__init__(plan)
        self.first: dict[int, bool] = {}  # family -> its kept member's split (eval?)
        self.home: dict[int, str] = {}  # family -> the domain of its kept member
        self.size: dict[int, int] = {}  # family -> members committed

    def start_domain(self, domain: Any) -> None:
        self.mode, self.domain = domain.cfg.options["family_mode"], domain.name

    def judge(self, group: Group) -> Any:
        fam = group.column("family")
        assert fam.shape == (len(group), 2)
        seen: dict[int, tuple[int, bool]] = {}  # this group's new families: first row, split
        touched = np.zeros(len(group), dtype=bool)
        for i in np.flatnonzero(group.keep & (fam[:, 0] == 1)):
            f = int(fam[i, 1])
            split = self.first.get(f, seen[f][1] if f in seen else None)
            if split is None:
                seen[f] = (int(i), bool(group.eval[i]))
            elif self.mode == "remove":
                group.keep[i], touched[i] = False, True
            else:
                touched[i] = group.eval[i] != split
                group.eval[i] = split
        return seen, touched

    def accept(self, group: Group, used: int, verdict: Any, counts: Counters) -> None:
        seen, touched = verdict
        for f, (i, split) in seen.items():
            if i < used and group.keep[i]:
                self.first[f], self.home[f] = split, self.domain
        fam = group.column("family")[:used]
        for f in fam[fam[:, 0] == 1, 1].tolist():
            self.size[f] = self.size.get(f, 0) + 1
        name = "docs_family_removed" if self.mode == "remove" else "docs_family_moved"
        counts[name] += int(touched[:used].sum())

    def finish(self, counts: Any) -> str | None:
        for f, n in self.size.items():
            counts[self.home[f]][f"families_of_size:{n}"] += 1
        return None


class Explode(Step):
    """Fails its task on a document (as the tokenizer check does on a wrong id)."""

    name, order = "explode", 460
    options = {"explode_on": Option(str | None, None, "fail the task on a document with it")}
    needs = ("tokens",)

    @classmethod
    def enabled(cls, cfg: Any) -> bool:
        return cfg.options["explode_on"] is not None

    def run(self, docs: Any) -> Any:
        word = self.settings.cfg.options["explode_on"]
        for doc in docs:
            if word in doc.text or os.environ.get("TEST_EXPLODE", "\0") in doc.text:
                raise TaskError(f"{doc.where()}: re-encoding gave other token ids")
            yield doc


@functools.lru_cache(maxsize=1)
def load_index(path: str) -> frozenset[str]:
    """A per-process resource (as a benchmark n-gram index): loaded once per worker."""
    with open(Path(path).with_suffix(".loads"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return frozenset(Path(path).read_text().split())


class CountListed(Step):
    name, order = "count_listed", 470
    options = {"listed_words": Option(str | None, None, "a file of words", path=True)}
    counters = ("docs_listed",)
    needs = ("text",)

    @classmethod
    def enabled(cls, cfg: Any) -> bool:
        return cfg.options["listed_words"] is not None

    @classmethod
    def check(cls, cfg: Any) -> None:
        path = cfg.options["listed_words"]  # checked in every domain, enabled or not
        if path is not None and not Path(path).is_file():
            raise ValueError(f"listed_words: no file {cfg.options['listed_words']}")

    def run(self, docs: Any) -> Any:
        words = load_index(self.settings.cfg.options["listed_words"])
        for doc in docs:
            if words & set(doc.text.split()):
                self.count("docs_listed")
            yield doc


COMPONENTS = (DropMarked, FamilyTag, FamilyHook, Explode, CountListed)


# --------------------------------------------------------------------------- corpora


def doc(rng: random.Random, *extra: str) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(40, 90))] + list(extra)
    rng.shuffle(words)
    return " ".join(words) + "."


def corpus(root: Path, files: int = 4, per_file: int = 150, **tables: dict) -> Path:
    """Domains alpha and beta; alpha plants 20 "XYZZY" and 7 "PLUGH" documents, beta 5 XYZZY;
    families fam0..fam29 have 3 members each, spread over files and both domains."""
    rng = random.Random(7)
    members = [(f, k) for f in range(30) for k in range(3)]
    rng.shuffle(members)
    spec = {"alpha": {"XYZZY": 20, "PLUGH": 7}, "beta": {"XYZZY": 5}}
    domains = {}
    for name, plant in spec.items():
        docs = [doc(rng) for _ in range(files * per_file)]
        slots = rng.sample(range(len(docs)), sum(plant.values()) + 45)
        for word, n in plant.items():
            for _ in range(n):
                docs[slots.pop()] = doc(rng, word)
        for _ in range(45):
            f, _k = members.pop()
            docs[slots.pop()] = doc(rng, f"fam{f}")
        paths = []
        for k in range(files):
            p = write_jsonl(root / f"{name}{k}.jsonl", docs[k * per_file:(k + 1) * per_file])
            paths.append(p.name)
        domains[name] = {"source": "json", "data_files": paths, "min_chars": 10,
                         **tables.get(name, {})}
    return write_recipe(root / "recipe.toml", domains, seed=5, block_size=16)


OPTS = ("--partition-mb", "0.05", "--interleave", "2", "--min-eval-docs", "1")


def texts(out: Path, domain: str) -> dict[str, list[str]]:
    ds = shards.open(out)
    return {s: [ds.split(domain, s).document_text(k)
                for k in range(len(ds.split(domain, s).documents()))] for s in ("train", "eval")}
