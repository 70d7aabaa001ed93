"""``source = "synthetic-math"``: SYNTHETIC MathQA-style problems from a seeded generator.

The offline stand-in for MathQA in the ``sample`` recipe, labelled synthetic in the manifest.
Partitions are ranges of PROBLEMS_PER_PARTITION problems, each generated from its own stream
``random.Random(f"{seed}:synthetic-math:{partition}")`` (:mod:`prep.readers.math_templates`),
so any partition is generated alone and the corpus depends only on the seed and the count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.math_templates import TEMPLATES, generate

PROBLEMS_PER_PARTITION = 1000


class SyntheticMathReader(Reader):
    name = "synthetic-math"

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self.seed = cfg.synthetic_seed
        self.count = cfg.synthetic_docs

    def partitions(self) -> list[Partition]:
        out = []
        for start in range(0, self.count, PROBLEMS_PER_PARTITION):
            n = min(PROBLEMS_PER_PARTITION, self.count - start)
            spec = {"seed": self.seed, "start": start, "count": n}
            key = f"problems-{start}-{start + n - 1}"
            out.append(Partition(len(out), key, spec, f"synthetic-math:{self.seed}:{key}"))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "reader": "synthetic-math",
            "synthetic": True,
            "seed": self.seed,
            "docs": self.count,
            "templates": sorted(TEMPLATES),
            "description": (f"SYNTHETIC: {self.count} MathQA-style word problems with worked "
                            f"rationales from a seeded generator ({len(TEMPLATES)} templates, "
                            f"random.Random('{self.seed}:synthetic-math:<partition>'), "
                            f"{PROBLEMS_PER_PARTITION} problems per partition); not real data"),
        }

    def format_rules(self) -> list[str]:
        return [
            "document = problem + blank line + rationale, in MathQA's surface style (lowercase, "
            "spaces around punctuation and operators), no prefixes",
            "each problem comes from a template with seeded numbers; the answer is computed "
            "exactly from them; rationale openings vary as MathQA's do",
        ]

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        spec = partition.spec
        start = int(spec["start"])
        for k, (name, text) in enumerate(generate(int(spec["seed"]), partition.index,
                                                  int(spec["count"]))):
            yield Document(text, {"template": name, "index": start + k})

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        spec = partition.spec
        return {"synthetic": True, "stream": f"{spec['seed']}:synthetic-math:{partition.index}",
                "problems": [spec["start"], spec["start"] + spec["count"]]}
