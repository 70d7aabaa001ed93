"""report.md: the report's numbers and figures as a document readable on its own."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _f(v: Any, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def render_markdown(rep: dict[str, Any], figs: dict[str, list[str]]) -> str:
    md: list[str] = []
    domains = rep["domains"]
    E, k = rep["n_experts"], rep["top_k"]

    def images(section: str) -> None:
        md.extend(f"![{name}]({name})" for name in figs.get(section, []))
        if figs.get(section):
            md.append("")

    arch = (f"{E} experts, top-{k}, MoE layers {rep['layers']}" if rep["layers"]
            else "dense model (no MoE layers)")
    md += [f"# Specialization report: {rep['label']}", "",
           f"Run `{rep['run_dir']}` at step {rep['step']}; data `{rep['data']}`; "
           f"{arch}; "
           f"up to {rep['max_tokens']:,} eval tokens per domain "
           f"({', '.join(f'{d}: {n:,}' for d, n in rep['eval_tokens'].items())}).", "",
           "Eval loss at this checkpoint on these tokens (the curves below use the training "
           "loop's own eval blocks): "
           + ", ".join(f"{d} {_f(v)}" for d, v in zip(domains, rep["eval_loss"], strict=True))
           + ".", ""]
    if rep["layers"]:
        md += ["## Routing fractions", "",
               f"Share of each domain's eval tokens per expert; top-1 rows sum to 1 (uniform "
               f"1/E = {1 / E:.3f})" + (f", top-{k} rows give the share of tokens with the expert "
                                       f"among their {k} (sum {k}, uniform k/E = {k / E:.3f})"
                                       if k > 1 else "")
               + ". Colour: white = uniform, red above, blue below.", ""]
        images("fractions")
        md += ["## Specialization scores", "",
               "Top share: the share of a domain's tokens on its most-used expert (uniform "
               f"{1 / E:.3f}). MI: I(domain; top-1 expert) in bits, maximum log2(D) = "
               f"{rep['specialization'][0]['mi_max_bits']:.3f}. Entropy: mean router entropy "
               f"in bits, maximum log2(E) = {math.log2(E):.3f}.", ""]
        rows = []
        for rec in rep["specialization"]:
            for d, dom in enumerate(domains):
                rows.append([str(rec["layer"]), dom, f"e{rec['top_expert'][d]}",
                             _f(rec["top_share"][d]), f"{rec['top_share'][d] * E:.2f}x",
                             _f(rec["entropy_by_domain_bits"][d])])
            rows.append([str(rec["layer"]), "**all**", "", "", "",
                         f"{_f(rec['entropy_bits'])} (MI {_f(rec['mi_bits'])} / "
                         f"{_f(rec['mi_max_bits'])} bits)"])
        md += _table(["layer", "domain", "top expert", "top share", "vs uniform",
                      "router entropy (bits)"], rows)
        images("specialization")
        md += ["## Causal test: removing experts", ""]
        if rep["causal"]:
            md += ["Eval-loss change (nats) of each domain when its most-used expert (then its "
                   "top 2) is removed from one layer's routing (-inf router logit), against "
                   f"removing random other experts (seed {rep['seed']}). Routing fractions show "
                   "correlation; this shows whether the expert matters.", ""]
            rows = [[str(c["layer"]), c["domain"], _f(c["base"]),
                     f"{_f(c['delta_top1'])} (e{c['top1_experts'][0]})",
                     f"{_f(c['delta_top2'])} ({', '.join(f'e{e}' for e in c['top2_experts'])})",
                     f"{_f(c['delta_random1'])} (e{c['random1_experts'][0]})",
                     f"{_f(c['delta_random2'])} "
                     f"({', '.join(f'e{e}' for e in c['random2_experts'])})"]
                    for c in rep["causal"]]
            md += _table(["layer", "domain", "base loss", "top-1 removed", "top-2 removed",
                          "random 1 removed", "random 2 removed"], rows)
            images("causal")
        else:
            md += ["Skipped (--no-causal).", ""]
        md += ["## OLMoE / Mixtral measures", "",
               f"Per-expert domain share against the uniform rate k/E = {k / E:.3f}: the top-{k} "
               "table above/heatmaps. Vocabulary specialization: share of a token id's "
               "occurrences sent to its most frequent expert (ids seen >= 5 times, weighted by "
               "occurrences). Max load violation: busiest expert's assignments / mean.", ""]
        rows = []
        for rec in rep["specialization"]:
            v1, vk = rec["vocab_specialization"], rec["vocab_specialization_topk"]
            topk_cell = [f"{_f(vk['score'])} (uniform {_f(vk['baseline'])})"] if k > 1 else []
            rows.append([str(rec["layer"]), f"{_f(v1['score'])} (uniform {_f(v1['baseline'])})",
                         *topk_cell, str(v1["token_ids"]), _f(rec["max_load_violation"], 2),
                         " ".join(f"{x:.2f}" for x in rec["load"])])
        md += _table(["layer", "vocab spec. top-1", *([f"vocab spec. top-{k}"] if k > 1 else []),
                      "token ids", "max load violation", "load per expert"], rows)
        md += ["**Router saturation** (mean overlap of each token's top-k experts at an earlier "
               "checkpoint with the final one):", ""]
        if rep["saturation"]:
            rows = [[Path(s["path"]).name, str(s["step"]), str(s["final_step"]),
                     ", ".join(f"layer {x['layer']}: {x['overlap']:.3f}" for x in s["layers"])]
                    for s in rep["saturation"]]
            md += _table(["checkpoint", "step", "final step", "overlap"], rows)
        else:
            md += ["not available (no --early-ckpt and no ckpt_*.pt in the run directory).", ""]
        md += [f"**Expert co-activation** P(j | i) for top-{k}: "
               + ("see the heatmaps." if k > 1 else "not applicable (top-1: one expert per "
                                                      "token)."), ""]
        images("olmoe")
        tt = rep.get("token_types")
        md += ["## Token-type routing (code)", ""]
        if tt:
            md += [f"Python token types of {tt['tokens']:,} BPE tokens of `{tt['domain']}` eval "
                   "documents (standard `tokenize`, mapped onto BPE tokens by character offsets; "
                   "type counts in brackets). I(type; expert): "
                   + ", ".join(f"layer {x['layer']} {_f(x['mi_bits'])} bits"
                               for x in tt["layers"]), ""]
            images("token_types")
        else:
            md += [f"not available (no domain {rep['code_domain']!r}).", ""]
        ft = rep["format_test"]
        md += ["## Format-artifact test", "", f"**{ft['verdict_line']}**", "",
               "Same content tokens routed with and without a surface format; the shift is the "
               "TV distance between the top-1 expert distributions of those tokens (added "
               "format tokens not counted).", ""]
        rows = [[s["domain"], s["transform"], s["description"], str(s["content_tokens"]),
                 _f(s["mean_tv"]),
                 _f(float(np.mean([p["changed_share"] for p in s["layers"]])))]
                for s in ft["shifts"]]
        md += _table(["domain", "transform", "change", "content tokens", "shift (TV)",
                      "tokens whose expert changed"], rows)
        rows = [[pair.replace("|", " vs "), " ".join(_f(v) for v in vals)]
                for pair, vals in ft["domain_distance"].items()]
        md += _table(["domains", "TV distance per layer"], rows)
        images("format")
    cv = rep["curves"]
    md += ["## Curves over training", ""]
    if len(cv["runs"]) > 1:
        md += [("Runs are step-matched" if cv["step_matched"] else
                "Runs end at different steps (" + ", ".join(
                    f"{k_}: {v}" for k_, v in cv["last_steps"].items()) + ")")
               + f"; eval loss at the last shared eval step {cv['common_step']}:", ""]
        if cv.get("at_common_step"):
            doms = [d for d in next(iter(cv["at_common_step"].values())) if d != "macro"]
            md += _table(["run", *doms, "macro"],
                         [[lab, *(_f(v.get(d)) for d in doms), _f(v["macro"])]
                          for lab, v in cv["at_common_step"].items()])
    images("curves")
    return "\n".join(md).rstrip() + "\n"
