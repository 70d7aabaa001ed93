"""Every number prep takes, from the command line or a recipe: one-line errors, NaN and inf too."""

from __future__ import annotations

import typing
from dataclasses import fields
from pathlib import Path

import pytest
from prep_fixture import run_prep, write_jsonl

from prep.config import PrepConfig, number_problem
from prep.recipe import DomainConfig

FLOAT_FLAGS = ["--size-mb", "--eval-fraction", "--shuffle-buffer-mb", "--partition-mb",
               "--max-bad-fraction"]
FLOAT_KEYS = ["size_mb", "eval_fraction", "shuffle_buffer_mb"]


def _floats(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in fields(cls) if float in (typing.get_args(hints[f.name])
                                                     or (hints[f.name],))]


def test_every_float_option_and_recipe_key_is_listed_here() -> None:
    assert ["--" + n.replace("_", "-") for n in _floats(PrepConfig)] == FLOAT_FLAGS
    assert _floats(DomainConfig) == FLOAT_KEYS


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "d.jsonl", ["some text to read"] * 3)
    return tmp_path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
@pytest.mark.parametrize("flag", FLOAT_FLAGS)
def test_a_non_finite_float_option_is_a_one_line_error(recipe_dir: Path, flag: str, value: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = recipe_dir / "out"
    assert run_prep("--recipe", "sample", "--out", str(out), f"{flag}={value}") == 1
    err = capsys.readouterr().err
    assert err == f"prep: error: {flag} must be a finite number, got {float(value)}\n"
    assert not out.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--size-mb", "0", "--size-mb must be > 0, got 0.0"),
    ("--partition-mb", "-1", "--partition-mb must be > 0, got -1.0"),
    ("--eval-fraction", "1", "--eval-fraction must be in (0, 1), got 1.0"),
    ("--max-bad-fraction", "1.5", "--max-bad-fraction must be in [0, 1], got 1.5"),
    ("--workers", "0", "--workers must be >= 1, got 0"),
    ("--min-eval-docs", "-2", "--min-eval-docs must be >= 0, got -2"),
])
def test_out_of_range_options_name_the_flag(recipe_dir: Path, flag: str, value: str,
                                            message: str, capsys: pytest.CaptureFixture) -> None:
    assert run_prep("--recipe", "sample", "--out", str(recipe_dir / "out"), f"{flag}={value}") == 1
    assert capsys.readouterr().err == f"prep: error: {message}\n"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_a_non_finite_recipe_value_is_a_one_line_error(recipe_dir: Path, key: str, value: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    recipe = recipe_dir / "r.toml"
    recipe.write_text(f'[domains.prose]\nsource = "json"\ndata_files = ["d.jsonl"]\n'
                      f"{key} = {value}\n")
    assert run_prep("--recipe", str(recipe), "--out", str(recipe_dir / "out")) == 1
    assert capsys.readouterr().err == (f"prep: error: {recipe}: [domains.prose] {key} must be a "
                                       f"finite number, got {float(value)}\n")


@pytest.mark.parametrize("key, value, message", [
    ("size_mb", "0", "size_mb must be > 0, got 0"),
    ("size_tokens", "0", "size_tokens must be > 0, got 0"),
    ("eval_fraction", "1.0", "eval_fraction must be in (0, 1), got 1.0"),
    ("interleave", "0", "interleave must be >= 1, got 0"),
    ("min_chars", "-1", "min_chars must be >= 0, got -1"),
])
def test_out_of_range_recipe_values_name_the_file_and_key(recipe_dir: Path, key: str,
                                                          value: str, message: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    recipe = recipe_dir / "r.toml"
    recipe.write_text(f'[domains.prose]\nsource = "json"\ndata_files = ["d.jsonl"]\n'
                      f"{key} = {value}\n")
    assert run_prep("--recipe", str(recipe), "--out", str(recipe_dir / "out")) == 1
    assert capsys.readouterr().err == f"prep: error: {recipe}: [domains.prose] {message}\n"


def test_number_problem() -> None:
    assert number_problem("x", None, low=0) is None
    assert number_problem("x", 3) is None  # no range: any finite number
    assert number_problem("x", float("nan")) == "x must be a finite number, got nan"
    assert number_problem("x", 0.5, low=0, low_open=True, high=1, high_open=True) is None
    assert number_problem("x", 1, low=0, high=1) is None
    assert number_problem("x", 1, low=0, high=1, high_open=True) == "x must be in [0, 1), got 1"
