"""README.md stays true: its two set-up commands are the ones CI and this test run, the sample
run's table it shows is what `python -m prep --workers 8` writes today, and every command of its
three-step example is accepted by the tool it names."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import shards
from train.config import parse_args as train_args
from train.report.config import parse_args as report_args

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    """The README's fenced blocks of one language ("" for none), in order."""
    out, current, open_lang = [], [], None
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            if open_lang is None:
                open_lang, current = line[3:].strip(), []
            else:
                if open_lang == lang:
                    out.append("".join(current))
                open_lang = None
        elif open_lang is not None:
            current.append(line)
    return out


def commands(block: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line, comments=True) for line in text.splitlines()
            if shlex.split(line, comments=True)]


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m prep --workers 8` as the README's first command runs it, in a fresh folder."""
    first = blocks("bash")[0].strip()
    assert first == "pip install -e . && python -m prep --workers 8"
    cwd = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *shlex.split(first.split("&&")[1])[1:]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return cwd / "shards_out"


def test_the_test_command_is_the_one_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"^TEST_CMD='(.*)'$", ci, re.M)
    assert test_cmd is not None
    assert blocks("bash")[1].strip() == test_cmd.group(1)


def test_the_sample_table_shown_is_what_prep_writes(sample_run: Path) -> None:
    ds = shards.open(sample_run)
    output = blocks("")[0]
    shown = re.findall(r"^ (\w+)?\s+(train|eval)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s", output,
                       re.M)
    assert len(shown) == 6
    domain = None
    for name, split, docs, tokens, n_blocks in shown:
        domain = name or domain
        rec = ds.manifest.domains[domain].splits[split]
        assert (rec.docs, rec.tokens, rec.blocks) == tuple(
            int(x.replace(",", "")) for x in (docs, tokens, n_blocks)), (domain, split)


def test_the_three_steps_are_accepted_by_their_tools(sample_run: Path) -> None:
    steps = commands(blocks("bash")[2])
    assert [c[:3] for c in steps] == [["python", "-m", "prep"], ["python", "-m", "shards"],
                                      ["python", "train/moe.py", "--data"],
                                      ["python", "-m", "train.report"]]
    prep, audit, train, report = steps
    assert prep[3:] == ["--workers", "8"]  # the run the fixture made
    proc = subprocess.run([sys.executable, *audit[1:]], cwd=sample_run.parent,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "near-duplicate pairs across the split" in proc.stdout
    cfg = train_args(train[2:])
    assert (cfg.data, cfg.experiment, cfg.max_steps) == ("shards_out", "moe-top1", 150)
    assert report_args(report[3:]).run_dir == train[train.index("--out") + 1]
