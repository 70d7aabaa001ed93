"""SYNTHETIC MathQA-style templates about money and ratios: percentages, profit and loss,
interest, shares, mixtures, discounts (registered in :mod:`prep.readers.math_templates`)."""

from __future__ import annotations

from fractions import Fraction
from random import Random

from prep.readers.math_style import ITEMS, NAMES, Problem, coprime_pair, noun, num


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
