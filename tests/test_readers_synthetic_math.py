"""The synthetic-math reader: deterministic, varied, right, and generated partition by
partition."""

from __future__ import annotations

import re
from fractions import Fraction

from readers_fixture import docs_of, planned, read_all, worker

from prep.readers import Document
from prep.readers.math_templates import TEMPLATES
from prep.recipe import DomainConfig

# --------------------------------------------------------------------------- synthetic math

_PURE = re.compile(r"^[\d. ()+*/^-]+$")


def _eval(expr: str) -> Fraction:
    code = re.sub(r"(\d+(?:\.\d+)?)", lambda m: f"F('{m.group(1)}')", expr.replace("^", "**"))
    return eval(code, {"F": Fraction})  # noqa: S307 - digits and operators only (checked)


def synth(seed: int, n: int = 4000) -> list[Document]:
    out = docs_of(DomainConfig(name="math", source="synthetic-math", synthetic_docs=n,
                               synthetic_seed=seed))
    assert all(isinstance(d, Document) for d in out)
    return out  # type: ignore[return-value]


def test_synthetic_math_deterministic_volume_and_variety() -> None:
    a, b, c = synth(42), synth(42), synth(7, 200)
    assert [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in a[:200]] != [d.text for d in c]
    assert len(a) == 4000 and sum(len(d.text.encode()) for d in a) >= 400_000
    assert len({d.text for d in a}) >= 0.98 * len(a)
    used = {d.source["template"] for d in a}
    assert len(used) >= 15 and used == set(TEMPLATES)
    assert [d.source["index"] for d in a] == list(range(4000))
    openings = {d.text.split("\n\n")[1].split(" ")[0] for d in a}
    assert {"explanation", "sol", "let"} <= openings
    for d in a:
        problem, rationale = d.text.split("\n\n")
        assert problem == problem.lower() and rationale == rationale.lower()
        assert "  " not in d.text and "answer" in rationale


def test_synthetic_math_partitions_generate_alone() -> None:
    cfg = DomainConfig(name="math", source="synthetic-math", synthetic_docs=2500,
                       synthetic_seed=42)
    src = planned(cfg)
    parts = src.partitions()
    assert [(p.key, p.spec) for p in parts] == [
        ("problems-0-999", {"seed": 42, "start": 0, "count": 1000}),
        ("problems-1000-1999", {"seed": 42, "start": 1000, "count": 1000}),
        ("problems-2000-2499", {"seed": 42, "start": 2000, "count": 500})]
    alone = [d.text for d in worker(src).read(parts[2])]  # the last partition, generated alone
    everything = read_all(src)
    assert alone == [d.text for d in everything[2000:]]
    assert [d.text for d in everything[:1000]] != [d.text for d in everything[1000:2000]]
    fewer = read_all(planned(DomainConfig(name="math", source="synthetic-math",
                                          synthetic_docs=1500, synthetic_seed=42)))
    assert [d.text for d in fewer] == [d.text for d in everything[:1500]]  # a prefix


def test_synthetic_math_arithmetic_is_right() -> None:
    checked = 0
    for d in synth(3, 2000):
        for seg in re.split(r" [.,;] (?!\d)|answer|so |then ", d.text):
            pieces = [p.strip() for p in seg.split(" = ")]
            for x, y in zip(pieces, pieces[1:], strict=False):
                if all(_PURE.match(p) and re.search(r"\d", p) for p in (x, y)):
                    checked += 1
                    assert abs(_eval(x) - _eval(y)) <= Fraction(1, 100), (x, y, d.text)
    assert checked >= 300


def test_synthetic_math_describe() -> None:
    src = planned(DomainConfig(name="math", source="synthetic-math", synthetic_docs=10,
                               synthetic_seed=5))
    d = src.describe()
    assert d["reader"] == "synthetic-math" and d["synthetic"] is True
    assert d["description"].startswith("SYNTHETIC: ")
    assert len(src.format_rules()) >= 1
    [p] = src.partitions()
    assert worker(src).partition_record(p) == {"synthetic": True, "stream": "5:synthetic-math:0",
                                               "problems": [0, 10]}
