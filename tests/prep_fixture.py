"""Small local corpora and recipes for prep tests, and `run_prep` (the CLI, quiet)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from prep.__main__ import main as prep_main

WORDS = ("the of and to in is was for on that with as by at from his her an which be this "
         "are were it its has had not but also they one two first new after more time year "
         "city river music school war game team film series album song road station church "
         "court king party state world life during between under over about into where when").split()


def random_doc(rng: random.Random, lo: int = 60, hi: int = 160) -> str:
    n = rng.randint(lo, hi)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, field: d}) + "\n")
    return path


def write_recipe(path: Path, domains: dict[str, dict], **top) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for name, table in domains.items():
        lines.append(f"\n[domains.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_prep(*args: str) -> int:
    return prep_main([*args, "--quiet"])
