"""SYNTHETIC MathQA-style word problems with worked rationales, from a seeded generator.

This is the offline stand-in for MathQA in the ``sample`` recipe, and it is labelled synthetic
in the manifest. Documents look like MathQA's after the ``mathqa`` reader formats them:
``f"{problem}\\n\\n{rationale}"`` in MathQA's surface style (lowercase, spaces around
punctuation and operators: ``speed = 48 * 5 / 18 = 40 / 3 m / sec``), with varied rationale
openings ("explanation : ...", "let x be ...", "sol . ...", direct calculations).

Each template draws its numbers first and derives the answer from them with exact fractions,
so every stated answer is correct. The stream is ``random.Random(f"{seed}:synthetic-math")``:
one seed, one stream.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from random import Random
from typing import Any

from prep.recipe import DomainConfig
from prep.sources import BadRecord, Document, Source


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


# --------------------------------------------------------------------------- templates


def speed_conversion(r: Random) -> Problem:
    v, t = r.randint(20, 130), r.randint(2, 12)
    d = v * t
    ms = Fraction(v * 5, 18)
    what = r.choice(["a car", "a bus", "a cyclist", "a truck", "a motorbike"])
    return Problem(
        f"{what} covers a distance of {d} km in {t} hours. what is its speed in m / sec?",
        [f"speed = {d} / {t} = {v} km / hr", f"{v} km / hr = {v} * 5 / 18 m / sec = {frac(ms)} m / sec"],
        num(ms),
    )


def train_pole(r: Random) -> Problem:
    k, t = r.randint(2, 9), r.randint(5, 40)
    v, ms = 18 * k, 5 * k
    length = ms * t
    obj = r.choice(["a pole", "a telegraph post", "a man standing on the platform", "a signal post"])
    if r.random() < 0.5:
        return Problem(
            f"a train {length} m long is running at {v} km / hr. in how much time will it pass {obj}?",
            [f"speed = {v} * 5 / 18 = {ms} m / sec", f"time taken = {length} / {ms} = {t} sec"],
            f"{t} sec",
        )
    return Problem(
        f"a train {length} m long passes {obj} in {t} seconds. what is the speed of the train in km / hr?",
        [f"speed = {length} / {t} = {ms} m / sec", f"{ms} m / sec = {ms} * 18 / 5 km / hr = {v} km / hr"],
        f"{v} km / hr",
    )


def train_platform(r: Random) -> Problem:
    k, t1, t2 = r.randint(2, 8), r.randint(6, 30), r.randint(5, 40)
    v, ms = 18 * k, 5 * k
    length, platform = ms * t1, ms * t2
    return Problem(
        f"a train running at {v} km / hr crosses a pole in {t1} seconds. how long will it take "
        f"to cross a platform {platform} m long?",
        [f"speed = {v} * 5 / 18 = {ms} m / sec", f"length of the train = {ms} * {t1} = {length} m",
         f"time to cross the platform = ({length} + {platform}) / {ms} = {length + platform} / {ms} "
         f"= {t1 + t2} sec"],
        f"{t1 + t2} sec",
        ["let the length of the train be x m", f"speed = {v} * 5 / 18 = {ms} m / sec",
         f"x / {ms} = {t1} , so x = {length}",
         f"required time = ({length} + {platform}) / {ms} = {t1 + t2} sec"],
    )


def trains_crossing(r: Random) -> Problem:
    k, t = r.randint(2, 9), r.randint(6, 30)
    rel = 18 * k
    total = 5 * k * t
    l1 = r.randint(total // 5, 4 * total // 5)
    l2 = total - l1
    if r.random() < 0.5:
        v1 = r.randint(rel // 4 + 1, 3 * rel // 4)
        v2 = rel - v1
        way, rel_s = "opposite directions", f"{v1} + {v2} = {rel}"
    else:
        v2 = r.randint(10, 60)
        v1 = v2 + rel
        way, rel_s = "the same direction", f"{v1} - {v2} = {rel}"
    return Problem(
        f"two trains {l1} m and {l2} m long are running in {way} on parallel tracks at {v1} km / hr "
        f"and {v2} km / hr. in what time will they completely clear each other?",
        [f"relative speed = {rel_s} km / hr = {rel} * 5 / 18 = {5 * k} m / sec",
         f"distance = {l1} + {l2} = {total} m", f"time = {total} / {5 * k} = {t} sec"],
        f"{t} sec",
    )


def percent_of(r: Random) -> Problem:
    p = r.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 60, 75, 80, 12.5, 37.5, 62.5])
    pf = Fraction(p).limit_denominator(8)
    if r.random() < 0.5:
        n = 40 * r.randint(2, 150)
        ans = pf * n / 100
        return Problem(f"what is {num(pf)} % of {n}?",
                       [f"{num(pf)} % of {n} = {num(pf)} / 100 * {n} = {num(ans)}"], num(ans))
    n = 40 * r.randint(2, 150)
    part = pf * n / 100
    return Problem(
        f"{num(pf)} % of a number is {num(part)}. find the number.",
        [f"number = {num(part)} * 100 / {num(pf)} = {n}"], str(n),
        ["let the number be x", f"then {num(pf)} / 100 * x = {num(part)}",
         f"x = {num(part)} * 100 / {num(pf)} = {n}"],
    )


def successive_change(r: Random) -> Problem:
    a, b = r.randint(2, 40), r.randint(2, 40)
    net = Fraction(a - b) - Fraction(a * b, 100)
    item = r.choice(["the price of " + noun(r.choice(ITEMS)), "the salary of " + r.choice(NAMES),
                     "the population of a town"])
    word = "increase" if net > 0 else "decrease"
    return Problem(
        f"{item} is first increased by {a} % and then decreased by {b} %. what is the net "
        "percentage change?",
        [f"net change = {a} - {b} - ({a} * {b}) / 100 = {num(net)} %",
         "the negative sign means a decrease" if net < 0 else f"that is a {word}"],
        f"{num(abs(net))} % {word}",
        ["let the original value be 100", f"after the increase it is {100 + a}",
         f"after the decrease it is {100 + a} * {100 - b} / 100 = {num(Fraction((100 + a) * (100 - b), 100))}",
         f"net change = {num(abs(net))} % {word}"],
    )


def profit_loss(r: Random) -> Problem:
    cp = 20 * r.randint(5, 500)
    g = 5 * r.randint(1, 9)
    gain = r.random() < 0.6
    sp = cp * (100 + g) // 100 if gain else cp * (100 - g) // 100
    who, item = r.choice(NAMES), r.choice(ITEMS)
    word = "gain" if gain else "loss"
    diff = abs(sp - cp)
    return Problem(
        f"{who} bought {item} for rs. {cp} and sold it for rs. {sp}. find the {word} percent.",
        [f"c . p . = rs . {cp} , s . p . = rs . {sp}", f"{word} = rs . {diff}",
         f"{word} % = {diff} / {cp} * 100 = {g} %"],
        f"{g} %",
    )


def cost_price(r: Random) -> Problem:
    cp = 20 * r.randint(5, 400)
    g = 5 * r.randint(1, 8)
    sp = cp * (100 + g) // 100
    return Problem(
        f"by selling {r.choice(ITEMS)} for rs. {sp}, a shopkeeper gains {g} %. find the cost price.",
        [f"c . p . = {sp} * 100 / (100 + {g}) = {sp} * 100 / {100 + g} = rs . {cp}"],
        f"rs . {cp}",
        ["let the cost price be rs . x", f"then x + {g} / 100 * x = {sp}",
         f"{100 + g} x / 100 = {sp} , so x = {cp}"],
    )


def simple_interest(r: Random) -> Problem:
    p, rate, t = 100 * r.randint(5, 300), r.randint(2, 15), r.randint(2, 8)
    si = Fraction(p * rate * t, 100)
    if r.random() < 0.5:
        return Problem(
            f"find the simple interest on rs. {p} at {rate} % per annum for {t} years.",
            [f"s . i . = p * r * t / 100 = {p} * {rate} * {t} / 100 = rs . {num(si)}"],
            f"rs . {num(si)}",
        )
    return Problem(
        f"a sum of rs. {p} amounts to rs. {num(p + si)} in {t} years at simple interest. find the "
        "rate of interest per annum.",
        [f"s . i . = {num(p + si)} - {p} = rs . {num(si)}",
         f"rate = 100 * {num(si)} / ({p} * {t}) = {rate} %"],
        f"{rate} %",
        ["let the rate be r %", f"s . i . = {num(p + si)} - {p} = {num(si)}",
         f"{p} * r * {t} / 100 = {num(si)} , so r = {rate}"],
    )


def compound_interest(r: Random) -> Problem:
    p = 1000 * r.randint(1, 50)
    rate, n = r.choice([4, 5, 8, 10, 12, 15, 20]), r.choice([2, 2, 3])
    amount = Fraction(p) * Fraction(100 + rate, 100) ** n
    ci = amount - p
    return Problem(
        f"what is the compound interest on rs. {p} at {rate} % per annum for {n} years, "
        "compounded annually?",
        [f"amount = {p} * (1 + {rate} / 100) ^ {n} = {p} * ({num(Fraction(100 + rate, 100))}) ^ {n} "
         f"= rs . {num(amount)}", f"c . i . = {num(amount)} - {p} = rs . {num(ci)}"],
        f"rs . {num(ci)}",
    )


def ratio_divide(r: Random) -> Problem:
    a, b = coprime_pair(r, 1, 9)
    k = r.randint(10, 400)
    total = (a + b) * k
    n1, n2 = r.sample(NAMES, 2)
    ask, share, part = (n2, b * k, b) if r.random() < 0.5 else (n1, a * k, a)
    return Problem(
        f"rs. {total} is divided between {n1} and {n2} in the ratio {a} : {b}. what is {ask}'s share?",
        [f"sum of ratio terms = {a} + {b} = {a + b}", f"{ask}'s share = {total} * {part} / {a + b} = rs . {share}"],
        f"rs . {share}",
        [f"let the shares be {a} x and {b} x", f"{a + b} x = {total} , so x = {k}",
         f"{ask}'s share = {part} * {k} = rs . {share}"],
    )


def ages_ratio(r: Random) -> Problem:
    a, b = sorted(coprime_pair(r, 1, 11))
    x, n = r.randint(2, 12), r.randint(2, 15)
    n1, n2 = r.sample(NAMES, 2)
    s = (a + b) * x
    return Problem(
        f"the ratio of the present ages of {n1} and {n2} is {a} : {b}. the sum of their ages is {s} "
        f"years. what will be {n1}'s age after {n} years?",
        [f"{n1}'s present age = {s} * {a} / {a + b} = {a * x} years",
         f"after {n} years = {a * x} + {n} = {a * x + n} years"],
        f"{a * x + n} years",
        [f"let the present ages be {a} x and {b} x years", f"{a} x + {b} x = {s} , so x = {x}",
         f"{n1}'s age after {n} years = {a * x} + {n} = {a * x + n} years"],
    )


def ages_father(r: Random) -> Problem:
    m, x = r.randint(3, 6), r.randint(4, 16)
    n = (m - 2) * x
    return Problem(
        f"a father is {m} times as old as his son. after {n} years, the father will be twice as old "
        "as his son. what is the son's present age?",
        ["when the father is twice as old as his son , the son's age equals their age difference",
         f"the age difference is {m} - 1 = {m - 1} times the son's present age",
         f"so the son's present age + {n} = {m - 1} * the son's present age",
         f"son's present age = {n} / {m - 2} = {x} years"],
        f"{x} years",
        [f"let the son's present age be x years , then the father's age is {m} x",
         f"{m} x + {n} = 2 (x + {n})", f"{m - 2 if m > 3 else ''} x = {n} , so x = {x}"],
    )


def work_together(r: Random) -> Problem:
    x, y = r.sample(range(4, 41), 2)
    rate = Fraction(1, x) + Fraction(1, y)
    days = 1 / rate
    n1, n2 = r.sample(NAMES, 2)
    return Problem(
        f"{n1} can do a piece of work in {x} days and {n2} can do it in {y} days. in how many days "
        "will they finish it working together?",
        [f"{n1}'s 1 day's work = 1 / {x}", f"{n2}'s 1 day's work = 1 / {y}",
         f"their 1 day's work = 1 / {x} + 1 / {y} = {frac(rate)}",
         f"time = {frac(days)} = {num(days)} days"],
        f"{num(days)} days",
    )


def pipes_tank(r: Random) -> Problem:
    x = r.randint(2, 20)
    y = x + r.randint(1, 20)
    net = Fraction(1, x) - Fraction(1, y)
    hours = 1 / net
    return Problem(
        f"pipe a can fill a tank in {x} hours and pipe b can empty it in {y} hours. if both pipes "
        "are opened together, how long will it take to fill the tank?",
        [f"part filled in 1 hour = 1 / {x} - 1 / {y} = {frac(net)}",
         f"time to fill the tank = {frac(hours)} = {num(hours)} hours"],
        f"{num(hours)} hours",
    )


def average_new(r: Random) -> Problem:
    n, m = r.randint(4, 30), r.randint(10, 90)
    d = r.choice([-3, -2, -1, 1, 2, 3, 4, 5])
    m2 = m + d
    new = (n + 1) * m2 - n * m
    if new <= 0:
        new, m2 = (n + 1) * (m + 1) - n * m, m + 1
    return Problem(
        f"the average of {n} numbers is {m}. when one more number is added, the average becomes "
        f"{m2}. what is the number added?",
        [f"sum of {n} numbers = {n} * {m} = {n * m}", f"sum of {n + 1} numbers = {n + 1} * {m2} = {(n + 1) * m2}",
         f"number added = {(n + 1) * m2} - {n * m} = {new}"],
        str(new),
    )


def average_replace(r: Random) -> Problem:
    n, w = r.randint(4, 20), r.randint(40, 90)
    d = Fraction(r.randint(2, 12), 2)
    new = w + n * d
    return Problem(
        f"the average weight of {n} persons increases by {num(d)} kg when a new person comes in "
        f"place of one of them weighing {w} kg. what is the weight of the new person?",
        [f"total weight increased = {n} * {num(d)} = {num(n * d)} kg",
         f"weight of the new person = {w} + {num(n * d)} = {num(new)} kg"],
        f"{num(new)} kg",
        ["let the weight of the new person be x kg", f"x - {w} = {n} * {num(d)}",
         f"x = {num(new)}"],
    )


def mixture(r: Random) -> Problem:
    a, b = coprime_pair(r, 1, 7)
    k = r.randint(2, 20)
    milk, water = a * k, b * k
    # water to add so that milk : water becomes c : d (a ratio needing more water)
    for _ in range(20):
        c, d = coprime_pair(r, 1, 7)
        if Fraction(milk * d, c) > water:
            break
    else:
        c, d = 1, water // milk + 2
    need = Fraction(milk * d, c) - water
    return Problem(
        f"a mixture of {milk + water} litres contains milk and water in the ratio {a} : {b}. how "
        f"much water must be added to make the ratio {c} : {d}?",
        [f"milk = {milk + water} * {a} / {a + b} = {milk} litres , water = {water} litres",
         f"required water = {milk} * {d} / {c} = {num(Fraction(milk * d, c))} litres",
         f"water to be added = {num(Fraction(milk * d, c))} - {water} = {num(need)} litres"],
        f"{num(need)} litres",
        ["let x litres of water be added", f"{milk} / ({water} + x) = {c} / {d}",
         f"x = {num(need)}"],
    )


def rectangle(r: Random) -> Problem:
    b, d = r.randint(5, 80), r.randint(2, 30)
    length = b + d
    perimeter = 2 * (length + b)
    return Problem(
        f"the length of a rectangular plot is {d} m more than its breadth. if the perimeter of the "
        f"plot is {perimeter} m, what is its area?",
        [f"length + breadth = {perimeter} / 2 = {length + b}", f"breadth = ({length + b} - {d}) / 2 = {b} m",
         f"length = {length} m", f"area = {length} * {b} = {length * b} sq m"],
        f"{length * b} sq m",
        [f"let the breadth be x m , then the length is (x + {d}) m",
         f"2 (x + x + {d}) = {perimeter} , so x = {b}", f"area = {length} * {b} = {length * b} sq m"],
    )


def circle(r: Random) -> Problem:
    k = r.randint(1, 15)
    radius = 7 * k
    c = 44 * k
    area = 154 * k * k
    return Problem(
        f"the circumference of a circle is {c} cm. find its area.",
        [f"2 * 22 / 7 * r = {c} , so r = {c} * 7 / 44 = {radius} cm",
         f"area = 22 / 7 * {radius} * {radius} = {area} sq cm"],
        f"{area} sq cm",
        ["let the radius be r cm", f"2 * 22 / 7 * r = {c} , r = {radius}",
         f"area = 22 / 7 * {radius} ^ 2 = {area} sq cm"],
    )


def lcm_hcf(r: Random) -> Problem:
    a, b = coprime_pair(r, 2, 24)
    h = r.randint(2, 30)
    n1, n2, lcm = h * a, h * b, h * a * b
    return Problem(
        f"the h . c . f . of two numbers is {h} and their l . c . m . is {lcm}. if one of the numbers "
        f"is {n1}, find the other.",
        ["product of the numbers = h . c . f . * l . c . m .",
         f"other number = {h} * {lcm} / {n1} = {n2}"],
        str(n2),
        ["let the other number be x", f"{n1} * x = {h} * {lcm}", f"x = {h * lcm} / {n1} = {n2}"],
    )


def divisibility(r: Random) -> Problem:
    d = r.randint(7, 97)
    n = r.randint(1000, 99999)
    if n % d == 0:
        n += r.randint(1, d - 1)
    rem = n % d
    add = d - rem
    if r.random() < 0.5:
        return Problem(
            f"what least number must be added to {n} to make it exactly divisible by {d}?",
            [f"{n} / {d} gives quotient {n // d} and remainder {rem}", f"number to be added = {d} - {rem} = {add}"],
            str(add),
        )
    return Problem(
        f"what least number must be subtracted from {n} to make it exactly divisible by {d}?",
        [f"on dividing {n} by {d} , the remainder is {rem}", f"so {rem} must be subtracted"],
        str(rem),
    )


def boat_stream(r: Random) -> Problem:
    b, s = r.randint(6, 30), r.randint(1, 5)
    t = r.randint(2, 9)
    down = r.random() < 0.5
    speed = b + s if down else b - s
    d = speed * t
    way = "downstream" if down else "upstream"
    sign = "+" if down else "-"
    return Problem(
        f"a boat can travel at {b} km / hr in still water. if the speed of the stream is {s} km / hr, "
        f"find the time taken by the boat to go {d} km {way}.",
        [f"speed {way} = {b} {sign} {s} = {speed} km / hr", f"time = {d} / {speed} = {t} hours"],
        f"{t} hours",
    )


def discount_markup(r: Random) -> Problem:
    m = 5 * r.randint(2, 12)
    d = r.randint(2, m - 2)
    gain = Fraction(m - d) - Fraction(m * d, 100)
    return Problem(
        f"a shopkeeper marks his goods {m} % above the cost price and allows a discount of {d} %. "
        "what is his gain percent?",
        [f"let c . p . = 100 , then marked price = {100 + m}",
         f"s . p . = {100 + m} * (100 - {d}) / 100 = {num(Fraction((100 + m) * (100 - d), 100))}",
         f"gain = {num(gain)} %"],
        f"{num(gain)} %",
    )


def consecutive(r: Random) -> Problem:
    k = r.choice([3, 4, 5])
    first = r.randint(5, 400)
    even = r.random() < 0.5
    step = 2 if even else 1
    nums = [first * step + step * i for i in range(k)]
    total = sum(nums)
    kind = "consecutive even numbers" if even else "consecutive numbers"
    x = nums[0]
    return Problem(
        f"the sum of {k} {kind} is {total}. what is the largest of them?",
        [f"the numbers are x , x + {step} , ... , x + {step * (k - 1)}",
         f"{k} x + {step * k * (k - 1) // 2} = {total} , so x = {x}", f"largest = {x} + {step * (k - 1)} = {nums[-1]}"],
        str(nums[-1]),
        ["let the smallest number be x", f"{k} x + {step * k * (k - 1) // 2} = {total}",
         f"x = {x} , and the largest is {nums[-1]}"],
    )


TEMPLATES: dict[str, Template] = {f.__name__: f for f in (
    speed_conversion, train_pole, train_platform, trains_crossing, percent_of, successive_change,
    profit_loss, cost_price, simple_interest, compound_interest, ratio_divide, ages_ratio,
    ages_father, work_together, pipes_tank, average_new, average_replace, mixture, rectangle,
    circle, lcm_hcf, divisibility, boat_stream, discount_markup, consecutive,
)}


def write_rationale(r: Random, p: Problem) -> str:
    """One of several MathQA rationale styles around the template's worked steps."""
    if p.let_steps and r.random() < 0.4:
        opening, steps = r.choice(["", "", "explanation : ", "sol . "]), p.let_steps
    else:
        opening, steps = r.choice(OPENINGS), p.steps
    body = r.choice(JOINERS).join(steps)
    return mathqa_style(f"{opening}{body} {r.choice(ENDINGS).format(a=p.answer)}")


def generate(seed: int, count: int) -> Iterator[tuple[str, str]]:
    """(template name, document text) for `count` seeded problems."""
    r = Random(f"{seed}:synthetic-math")
    names = list(TEMPLATES)
    for _ in range(count):
        name = r.choice(names)
        p = TEMPLATES[name](r)
        yield name, f"{mathqa_style(p.question)}\n\n{write_rationale(r, p)}"


class SyntheticMathSource(Source):
    """SYNTHETIC MathQA-style problems (labelled so in the manifest)."""

    def __init__(self, cfg: DomainConfig, *, seed: int) -> None:
        self.domain = cfg.name
        self.seed = seed
        self.count = cfg.synthetic_docs

    def describe(self) -> dict[str, Any]:
        return {
            "reader": "synthetic-math",
            "synthetic": True,
            "seed": self.seed,
            "docs": self.count,
            "templates": sorted(TEMPLATES),
            "description": (f"SYNTHETIC: {self.count} MathQA-style word problems with worked "
                            f"rationales from a seeded generator ({len(TEMPLATES)} templates, "
                            f"random.Random('{self.seed}:synthetic-math')); not real data"),
        }

    def format_rules(self) -> list[str]:
        return [
            "document = problem + blank line + rationale, in MathQA's surface style (lowercase, "
            "spaces around punctuation and operators), no prefixes",
            "each problem comes from a template with seeded numbers; the answer is computed "
            "exactly from them; rationale openings vary as MathQA's do",
        ]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        for i, (name, text) in enumerate(generate(self.seed, self.count)):
            yield Document(text, {"template": name, "index": i})
