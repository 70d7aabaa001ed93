"""SYNTHETIC MathQA-style word problems: the templates, their registry, the seeded generator.

Templates about motion, work, ages, averages, geometry and numbers live here; those about
money and ratios in :mod:`prep.readers.math_money`; the surface style in
:mod:`prep.readers.math_style`. Documents look like MathQA's after the ``mathqa`` reader
formats them: ``f"{problem}\\n\\n{rationale}"``, lowercase, spaces around punctuation and
operators (``speed = 48 * 5 / 18 = 40 / 3 m / sec``), with varied rationale openings.

Each template draws its numbers first and derives the answer from them with exact fractions,
so every stated answer is correct. Problems come in independent streams, one per partition:
``random.Random(f"{seed}:synthetic-math:{partition}")``, so any partition is generated alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from random import Random

from prep.readers.math_money import (
    compound_interest,
    cost_price,
    discount_markup,
    mixture,
    percent_of,
    profit_loss,
    ratio_divide,
    simple_interest,
    successive_change,
)
from prep.readers.math_style import (
    NAMES,
    Problem,
    Template,
    coprime_pair,
    frac,
    mathqa_style,
    num,
    write_rationale,
)

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


def generate(seed: int, partition: int, count: int) -> Iterator[tuple[str, str]]:
    """(template name, document text) for the `count` problems of one partition's stream."""
    r = Random(f"{seed}:synthetic-math:{partition}")
    names = list(TEMPLATES)
    for _ in range(count):
        name = r.choice(names)
        p = TEMPLATES[name](r)
        yield name, f"{mathqa_style(p.question)}\n\n{write_rationale(r, p)}"
