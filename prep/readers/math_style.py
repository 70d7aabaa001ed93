"""MathQA's surface style for the synthetic-math problems: vocabulary, number formats, spacing.

Shared by the templates (:mod:`prep.readers.math_templates`) and the rationale writer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from random import Random


@dataclass
class Problem:
    question: str
    steps: list[str]  # a direct worked solution
    answer: str
    let_steps: list[str] | None = None  # an algebraic "let x be ..." solution, if natural


Template = Callable[[Random], Problem]

NAMES = ["ram", "shyam", "john", "mary", "ravi", "anita", "peter", "sara", "ajay", "priya",
         "tom", "lisa", "raju", "meena", "david", "kiran"]
ITEMS = ["a watch", "a bicycle", "a radio", "a table", "a chair", "a book", "an article",
         "a fan", "a camera", "a phone", "a bag", "a lamp", "a clock", "a toy"]
OPENINGS = ["explanation : ", "sol . ", "solution : ", "", "", "we have "]
JOINERS = [" . ", " . ", " "]
ENDINGS = ["answer : {a}", "answer is {a} .", "the answer is {a} .", "hence , the answer is {a} .",
           "answer {a}", "therefore the required answer is {a} ."]


# --------------------------------------------------------------------------- surface style


def num(x: Fraction | int) -> str:
    """An exact number as MathQA writes it: integers plain, others to at most 2 decimals."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.2f}".rstrip("0").rstrip(".")


def frac(x: Fraction | int) -> str:
    """An exact fraction: ``40 / 3`` (or an integer)."""
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator} / {x.denominator}"


_SPACED = re.compile(r"([?:()%/*+=;!'$]|(?<!\d)[.,]|[.,](?!\d))")


def mathqa_style(text: str) -> str:
    """Lowercase; spaces around punctuation and operators (not inside decimals); one space."""
    return " ".join(_SPACED.sub(r" \1 ", text.lower()).split())


def noun(item: str) -> str:
    """"a watch" -> "watch"."""
    return item.split(" ", 1)[1]


def coprime_pair(r: Random, lo: int, hi: int) -> tuple[int, int]:
    """Two distinct coprime integers in [lo, hi] (a ratio in lowest terms)."""
    while True:
        a, b = r.sample(range(lo, hi + 1), 2)
        if math.gcd(a, b) == 1:
            return a, b



def write_rationale(r: Random, p: Problem) -> str:
    """One of several MathQA rationale styles around the template's worked steps."""
    if p.let_steps and r.random() < 0.4:
        opening, steps = r.choice(["", "", "explanation : ", "sol . "]), p.let_steps
    else:
        opening, steps = r.choice(OPENINGS), p.steps
    body = r.choice(JOINERS).join(steps)
    return mathqa_style(f"{opening}{body} {r.choice(ENDINGS).format(a=p.answer)}")
