"""The labelled set of `python -m prep.bench.neardup`: planted near-duplicates and distinct
documents that share boilerplate, each pair with its measured word-5-gram Jaccard.

- **originals**: real code (the running Python's standard library `.py` files, 500..20000
  characters) and real prose (pydoc topics, chunked as the `pydoc` reader does), a seeded sample;
- **variants** of each original, as a new user planted them in issue 12: re-indented (code:
  4-space indents become 2 spaces; prose: re-wrapped at 60 columns), a licence header added,
  ~3% of the lines deleted, one identifier (prose: one word) renamed everywhere, and all four at
  once. Each pair (original, variant) is labelled with its exact Jaccard similarity over the
  shingles prep uses (`shards.minhash.shingle_set`);
- **templated**: SYNTHETIC math problems from prep's generator (`prep.readers.math_templates`):
  the same template's wording with other numbers: distinct documents that must all be kept.
"""

from __future__ import annotations

import keyword
import random
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prep.readers.math_templates import generate
from prep.readers.pydoc import chunk_paragraphs, load_pydoc_topics
from prep.readers.stdlib import stdlib_files
from shards.minhash import jaccard, shingle_set

LICENCE = """Copyright (c) 2024 The Example Project Authors. All rights reserved.

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions: the above copyright
notice and this permission notice shall be included in all copies or substantial portions."""
VARIANTS = ("reindent", "licence", "delete3", "rename", "all")
IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{3,}\b")
WORD = re.compile(r"\b[a-z]{5,}\b")


@dataclass
class Doc:
    name: str  # "code:<path>", "prose:<topic>#<part>", "math:<template>#<i>", or a variant's
    kind: str  # the shingle kind: code or prose
    text: str
    original: int | None = None  # a variant's original (index into LabelledSet.docs)
    variant: str | None = None
    jaccard: float | None = None  # exact, to its original


@dataclass
class LabelledSet:
    docs: list[Doc] = field(default_factory=list)

    def originals(self, kind: str | None = None) -> list[int]:
        return [i for i, d in enumerate(self.docs) if d.original is None
                and not d.name.startswith("math:") and kind in (None, d.kind)]

    def variants(self) -> list[int]:
        return [i for i, d in enumerate(self.docs) if d.original is not None]

    def templated(self) -> list[int]:
        return [i for i, d in enumerate(self.docs) if d.name.startswith("math:")]


def code_originals(n: int, rng: random.Random) -> list[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for rel in stdlib_files(root):
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 500 <= len(text) <= 20000:
            out.append((rel, text))
    return rng.sample(out, min(n, len(out)))


def prose_originals(n: int, rng: random.Random) -> list[tuple[str, str]]:
    topics, _ = load_pydoc_topics()
    out = [(f"{key}#{part}", chunk) for key in sorted(topics)
           for part, chunk in enumerate(chunk_paragraphs(topics[key])) if len(chunk) >= 500]
    return rng.sample(out, min(n, len(out)))


def reindent(text: str, kind: str) -> str:
    if kind == "code":
        return re.sub(r"(?m)^((?:    )+)", lambda m: "  " * (len(m.group(1)) // 4), text)
    out = []
    for para in text.split("\n\n"):  # re-wrap every paragraph at 60 columns
        words, line, lines = para.split(), "", []
        for w in words:
            if line and len(line) + 1 + len(w) > 60:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}" if line else w
        lines.append(line)
        out.append("\n".join(lines))
    return "\n\n".join(out)


def add_licence(text: str, kind: str) -> str:
    if kind == "code":
        return "".join(f"# {x}".rstrip() + "\n" for x in LICENCE.splitlines()) + "\n" + text
    return LICENCE + "\n\n" + text


def delete_lines(text: str, rng: random.Random, share: float = 0.03) -> str:
    lines = text.split("\n")
    drop = set(rng.sample(range(len(lines)), max(1, round(len(lines) * share))))
    return "\n".join(x for i, x in enumerate(lines) if i not in drop)


def rename(text: str, kind: str, rng: random.Random) -> str:
    found = IDENT.findall(text) if kind == "code" else WORD.findall(text)
    names = sorted(w for w, c in Counter(found).items() if c >= 2 and not keyword.iskeyword(w))
    if not names:
        return text
    old = rng.choice(names)
    return re.sub(rf"\b{re.escape(old)}\b", f"{old}_renamed" if kind == "code" else "zyxwv",
                  text)


def variant(text: str, kind: str, how: str, rng: random.Random) -> str:
    if how == "reindent":
        return reindent(text, kind)
    if how == "licence":
        return add_licence(text, kind)
    if how == "delete3":
        return delete_lines(text, rng)
    if how == "rename":
        return rename(text, kind, rng)
    return add_licence(rename(delete_lines(reindent(text, kind), rng), kind, rng), kind)


def build(n_code: int = 200, n_prose: int = 200, n_math: int = 2000, seed: int = 12
          ) -> LabelledSet:
    """The set, deterministic for a seed (and the running Python's files)."""
    rng = random.Random(seed)
    s = LabelledSet()
    for kind, found in (("code", code_originals(n_code, rng)),
                        ("prose", prose_originals(n_prose, rng))):
        for name, text in found:
            s.docs.append(Doc(f"{kind}:{name}", kind, text))
            k = len(s.docs) - 1
            base = shingle_set(text, kind)
            for how in VARIANTS:
                v = variant(text, kind, how, rng)
                s.docs.append(Doc(f"{kind}:{name}~{how}", kind, v, k, how,
                                  jaccard(base, shingle_set(v, kind))))
    for i, (template, text) in enumerate(generate(seed, 0, n_math)):
        s.docs.append(Doc(f"math:{template}#{i}", "prose", text))
    return s
