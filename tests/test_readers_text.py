"""The text reader: one document per line, bad bytes named by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from readers_fixture import docs_of, local_cfg

from prep.readers import BadRecord, SourceError


def test_non_utf8_text_lines_name_the_file_and_line(tmp_path: Path) -> None:
    t = tmp_path / "latin.txt"
    t.write_bytes(b"fine\ncaf\xe9\n")
    out = docs_of(local_cfg("text", [str(t)], text_field="text"))
    assert out[0].text == "fine" and isinstance(out[1], BadRecord)
    assert out[1].reason.startswith(f"{t}: line 2: bytes are not UTF-8")
    t.write_bytes(b"caf\xe9\nfine\n")
    with pytest.raises(SourceError, match=r"latin\.txt: line 1: bytes are not UTF-8.*first record"):
        docs_of(local_cfg("text", [str(t)], text_field="text"))
