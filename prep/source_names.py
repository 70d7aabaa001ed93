"""The reader registry: each recipe `source` and `group` name, and where its reader lives.

A leaf module (it imports nothing from prep): `prep.recipe` validates names against it without
importing `prep.readers`, and `prep.readers` imports a reader only when a recipe uses it, so
that readers may refer to the recipe's types (`prep.readers.base` -> `prep.recipe`) with no
import circle, and a recipe that needs neither imports no datasets or pyarrow.
"""

from __future__ import annotations

READERS: dict[str, str] = {
    "hf": "prep.readers.hf:HFReader",
    "json": "prep.readers.jsonl:JsonReader",
    "parquet": "prep.readers.parquet:ParquetReader",
    "text": "prep.readers.text:TextReader",
    "mathqa": "prep.readers.mathqa:MathQAReader",
    "stdlib": "prep.readers.stdlib:StdlibReader",
    "pydoc": "prep.readers.pydoc:PydocReader",
    "synthetic-math": "prep.readers.synthetic_math:SyntheticMathReader",
}
GROUPS: dict[str, str] = {
    "wikitext": "prep.readers.wikitext:WikiTextArticles",
}
SOURCE_NAMES = tuple(READERS)
GROUP_NAMES = tuple(GROUPS)
