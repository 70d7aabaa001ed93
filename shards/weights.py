"""``--domain-weights``: how a training run or an export mixes the dataset's domains.

``"code=1,math=1,prose=2"`` gives each named domain a share of the tokens; the weights are
normalised to sum to 1, every domain must be named (0 leaves one out), and None or "" gives every
domain the same share. Used by `train` (the sampler's mix) and `shards export --format nanogpt`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class WeightsError(ValueError):
    """A ``--domain-weights`` value that cannot be used; the message is one line."""


def parse_domain_weights(spec: str | None, domains: Sequence[str],
                         scope: str = "domain of the dataset") -> dict[str, float]:
    """Normalised weights for exactly `domains` (see the module docstring); `scope` names what
    the domains are in messages ("exported domain", ...)."""
    if not spec:
        return {d: 1.0 / len(domains) for d in domains}
    given: dict[str, float] = {}
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep:
            raise WeightsError(f"--domain-weights: {item!r} is not NAME=WEIGHT (example: "
                               "code=1,math=1,prose=1)")
        if name not in domains:
            article = "an" if scope[:1] in "aeiou" else "a"
            raise WeightsError(f"--domain-weights: {name!r} is not {article} {scope} (those "
                               f"are {', '.join(domains)})")
        if name in given:
            raise WeightsError(f"--domain-weights: {name!r} is given twice")
        try:
            w = float(value)
        except ValueError:
            w = math.nan
        if not math.isfinite(w) or w < 0:
            raise WeightsError(f"--domain-weights: the weight of {name!r} must be a finite "
                               f"number >= 0, got {value!r}")
        given[name] = w
    missing = [d for d in domains if d not in given]
    if missing:
        raise WeightsError(f"--domain-weights lacks {', '.join(missing)}: give every {scope} a "
                           "weight (0 leaves it out)")
    total = sum(given.values())
    if total <= 0:
        raise WeightsError("--domain-weights: every weight is 0; at least one must be > 0")
    return {d: given[d] / total for d in domains}
