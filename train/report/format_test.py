"""The format-artifact test: does routing follow a document's content or its surface format?

Each domain's data has a surface layout of its own (math: ``problem\\n\\nrationale``, code: a
file, prose: article text). A router may key on that layout rather than on what the text says.
The test routes the same content twice -- in its base form and with the format changed -- and
measures how far the top-1 expert distribution moves, compared with how far apart the domains'
distributions are.

Transforms (``TRANSFORMS``; a document becomes two segment lists, content segments identical):

* code, ``code-as-math``: a math-style question line and a blank line before the code;
* code, ``code-fence``: the code inside a Markdown code fence tagged python;
* math, ``problem-solution``: ``Problem:`` / ``Solution:`` labels around problem and rationale;
* any other domain, ``leading-quote``: a leading ``"`` added (removed when the text has one).

Measurement, per MoE layer: segments are tokenized one by one and concatenated, so the content
tokens are the same ids in both variants (content is cut so both fit in ``block_size``); only the
content tokens are counted, so added format tokens never count. For each transform, the
**format shift** is the total variation distance between the top-1 expert distributions of the
content tokens in the base and the changed variant (the share of tokens whose expert changed is
reported too). The **domain distance** is the mean TV distance between every pair of domains'
top-1 distributions, measured on the base variants' content tokens.

Verdict rule: ``format`` if mean format shift >= ``threshold`` (default 0.5) x mean domain
distance (both averaged over MoE layers; shifts over transforms), else ``content``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tiktoken

from train.report.specialization import route_tokens, tv_distance

Segments = list[tuple[str, bool]]  # (text, is_content)
DEFAULT_THRESHOLD = 0.5


@dataclass
class FormatTransform:
    name: str
    domain: str | None  # the domain it applies to; None = every domain without its own
    description: str
    apply: Callable[[str], tuple[Segments, Segments] | None]  # None: skip this document


def _code_as_math(text: str) -> tuple[Segments, Segments]:
    return [(text, True)], [("what does the following program compute ?", False),
                            ("\n\n", False), (text, True)]


def _code_fence(text: str) -> tuple[Segments, Segments]:
    return [(text, True)], [("```python\n", False), (text, True), ("\n```", False)]


def _problem_solution(text: str) -> tuple[Segments, Segments] | None:
    problem, sep, rationale = text.partition("\n\n")
    if not sep or not problem.strip() or not rationale.strip():
        return None
    return ([(problem, True), ("\n\n", False), (rationale, True)],
            [("Problem: ", False), (problem, True), ("\n\nSolution: ", False), (rationale, True)])


def _leading_quote(text: str) -> tuple[Segments, Segments] | None:
    if text.startswith('"'):
        rest = text[1:]
        return ([('"', False), (rest, True)], [(rest, True)]) if rest.strip() else None
    return [(text, True)], [('"', False), (text, True)]


TRANSFORMS: tuple[FormatTransform, ...] = (
    FormatTransform("code-as-math", "code", "a math-style question line + blank line before "
                    "the code (the math layout `problem\\n\\nrationale`)", _code_as_math),
    FormatTransform("code-fence", "code", "code inside a Markdown code fence tagged python",
                    _code_fence),
    FormatTransform("problem-solution", "math", "`Problem:` / `Solution:` labels added around "
                    "problem and rationale", _problem_solution),
    FormatTransform("leading-quote", None, 'a leading `"` added (removed when present)',
                    _leading_quote),
)


def transforms_for(domains: Sequence[str],
                   transforms: Sequence[FormatTransform] = TRANSFORMS) -> list[tuple[str, FormatTransform]]:
    """(domain, transform) pairs: a domain's own transforms, else the generic ones."""
    out = []
    for d in domains:
        own = [t for t in transforms if t.domain == d]
        out += [(d, t) for t in (own or [t for t in transforms if t.domain is None])]
    return out


def encode_pair(enc: tiktoken.Encoding, base: Segments, variant: Segments,
                max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Token ids and content masks of both variants, their content tokens identical.

    Each segment is encoded on its own; the content is cut (from the end) so that both variants
    fit in `max_len` tokens. Returns None when no content token fits.
    """
    def enc_segs(segs: Segments) -> list[tuple[list[int], bool]]:
        return [(enc.encode_ordinary(t), c) for t, c in segs if t]

    b, v = enc_segs(base), enc_segs(variant)
    content_b = [ids for ids, c in b if c]
    content_v = [ids for ids, c in v if c]
    if content_b != content_v:
        raise ValueError("format transform changed the content segments; a transform may only "
                         "add or remove format segments")
    fmt = max(sum(len(i) for i, c in s if not c) for s in (b, v))
    budget = max_len - fmt
    if budget <= 0 or not any(content_b):
        return None

    def build(segs: list[tuple[list[int], bool]]) -> tuple[np.ndarray, np.ndarray]:
        ids: list[int] = []
        mask: list[bool] = []
        left = budget
        for seg, c in segs:
            if c:
                seg = seg[:left]
                left -= len(seg)
            ids += seg
            mask += [c] * len(seg)
        return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)

    ib, mb = build(b)
    iv, mv = build(v)
    return ib, mb, iv, mv


@dataclass
class FormatResult:
    threshold: float
    layers: list[int]
    n_experts: int
    domain_distance: dict[str, list[float]]  # "a|b" -> per layer TV distance
    shifts: list[dict[str, Any]] = field(default_factory=list)  # one per (domain, transform)
    mean_domain_distance: float = 0.0
    mean_format_shift: float = 0.0
    ratio: float | None = None
    verdict: str = "content"
    verdict_line: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _hist(experts: list[np.ndarray], n_experts: int) -> np.ndarray:
    if not experts:
        return np.zeros(n_experts)
    return np.bincount(np.concatenate(experts), minlength=n_experts).astype(np.float64)


def run_format_test(model: Any, enc: tiktoken.Encoding, docs: dict[str, list[str]], *,
                    n_experts: int, block_size: int, threshold: float = DEFAULT_THRESHOLD,
                    max_tokens: int = 20000,
                    transforms: Sequence[FormatTransform] = TRANSFORMS) -> FormatResult:
    """Route each domain's documents (``docs``: domain -> texts) in base and changed form and
    decide whether content or format drives routing (rule in the module docstring).

    `model` needs the GPT routing interface: ``model(idx, return_routing=True).routing`` and
    ``model.moe_layer_ids``. At most `max_tokens` content tokens per (domain, transform).
    """
    if not 0 < threshold:
        raise ValueError(f"format test threshold must be > 0, got {threshold}")
    layers = list(model.moe_layer_ids)
    L = len(layers)
    base_cache: dict[str, list[list[np.ndarray]]] = {}  # domain -> per layer content experts
    base_tokens: dict[str, int] = {}
    shifts = []
    for domain, tf in transforms_for(list(docs), transforms):
        base_e: list[list[np.ndarray]] = [[] for _ in range(L)]
        var_e: list[list[np.ndarray]] = [[] for _ in range(L)]
        n_tok = n_docs = 0
        for text in docs[domain]:
            if n_tok >= max_tokens:
                break
            pair = tf.apply(text)
            if pair is None:
                continue
            enc_pair = encode_pair(enc, pair[0], pair[1], block_size)
            if enc_pair is None:
                continue
            ib, mb, iv, mv = enc_pair
            rb, rv = route_tokens(model, ib), route_tokens(model, iv)
            for li in range(L):
                base_e[li].append(rb[li][0, :, 0][mb])
                var_e[li].append(rv[li][0, :, 0][mv])
            n_tok += int(mb.sum())
            n_docs += 1
        per_layer = []
        for li in range(L):
            hb, hv = _hist(base_e[li], n_experts), _hist(var_e[li], n_experts)
            flips = (float(np.mean(np.concatenate(base_e[li]) != np.concatenate(var_e[li])))
                     if base_e[li] else 0.0)
            per_layer.append({"layer": layers[li], "tv": tv_distance(hb, hv),
                              "changed_share": flips,
                              "base": (hb / max(hb.sum(), 1)).tolist(),
                              "variant": (hv / max(hv.sum(), 1)).tolist()})
        shifts.append({"domain": domain, "transform": tf.name, "description": tf.description,
                       "docs": n_docs, "content_tokens": n_tok, "layers": per_layer,
                       "mean_tv": float(np.mean([p["tv"] for p in per_layer])) if L else 0.0})
        if n_tok > base_tokens.get(domain, 0):  # the domain's largest base sample
            base_cache[domain], base_tokens[domain] = base_e, n_tok
    dist: dict[str, list[float]] = {}
    names = sorted(base_cache)
    for a, b in itertools.combinations(names, 2):
        dist[f"{a}|{b}"] = [tv_distance(_hist(base_cache[a][li], n_experts),
                                        _hist(base_cache[b][li], n_experts)) for li in range(L)]
    res = FormatResult(threshold=threshold, layers=layers, n_experts=n_experts,
                       domain_distance=dist, shifts=shifts)
    counted = [s for s in shifts if s["content_tokens"]]
    res.mean_format_shift = float(np.mean([s["mean_tv"] for s in counted])) if counted else 0.0
    res.mean_domain_distance = (float(np.mean([np.mean(v) for v in dist.values()]))
                                if dist and L else 0.0)
    res.verdict, res.ratio = decide(res.mean_format_shift, res.mean_domain_distance, threshold)
    ratio_s = f"{res.ratio:.2f}" if res.ratio is not None else "n/a"
    res.verdict_line = (
        f"verdict: {res.verdict.upper()} drives routing -- mean format shift "
        f"{res.mean_format_shift:.3f} vs mean between-domain distance "
        f"{res.mean_domain_distance:.3f} (ratio {ratio_s}; rule: 'format' if shift >= "
        f"{threshold:g} x domain distance, else 'content'; TV distance of top-1 expert "
        f"distributions on the same content tokens)")
    return res


def decide(shift: float, distance: float, threshold: float) -> tuple[str, float | None]:
    """('format' | 'content', shift / distance): 'format' iff shift >= threshold * distance.

    With no distance between domains (0), any positive shift counts as 'format'.
    """
    ratio = shift / distance if distance > 0 else None
    if distance > 0:
        return ("format" if shift >= threshold * distance else "content"), ratio
    return ("format" if shift > 0 else "content"), ratio
