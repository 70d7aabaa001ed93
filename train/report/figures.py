"""The report's PNG figures (matplotlib, imported lazily through train/report/plots.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def make_figures(rep: dict[str, Any], out: Path, dpi: int) -> dict[str, list[str]]:
    from train.report import plots

    figs: dict[str, list[str]] = {}

    def add(section: str, path: Path) -> None:
        figs.setdefault(section, []).append(path.name)

    domains = rep["domains"]
    E, k = rep["n_experts"], rep["top_k"]
    experts = [f"e{i}" for i in range(E)]
    for rec in rep["specialization"]:
        lay = rec["layer"]
        add("fractions", plots.heatmap(np.array(rec["fractions_top1"]), domains, experts,
                                       f"layer {lay}: top-1 routing fractions (domain x expert)",
                                       out / f"fractions_top1_layer{lay}.png",
                                       uniform=rec["uniform_top1"], dpi=dpi))
        if k > 1:
            add("fractions", plots.heatmap(np.array(rec["fractions_topk"]), domains, experts,
                                           f"layer {lay}: top-{k} token share (domain x expert)",
                                           out / f"fractions_top{k}_layer{lay}.png",
                                           uniform=rec["uniform_topk"], dpi=dpi))
        if rec["coactivation"] is not None:
            add("olmoe", plots.heatmap(np.array(rec["coactivation"]), experts, experts,
                                       f"layer {lay}: co-activation P(col | row)",
                                       out / f"coactivation_layer{lay}.png", dpi=dpi))
    if rep["specialization"]:
        layers = [f"layer {r['layer']}" for r in rep["specialization"]]
        series = {dom: [r["top_share"][d] for r in rep["specialization"]]
                  for d, dom in enumerate(domains)}
        add("specialization", plots.grouped_bars(
            layers, series, "share of a domain's tokens on its most-used expert", "share",
            out / "specialization_top_share.png", hline=1.0 / E, hline_label="uniform 1/E",
            dpi=dpi))
        mi = {"I(domain; expert)": [r["mi_bits"] for r in rep["specialization"]],
              "router entropy / log2(E)": [r["entropy_bits"] / r["entropy_max_bits"]
                                           for r in rep["specialization"]]}
        add("specialization", plots.grouped_bars(
            layers, mi, "mutual information (bits) and normalised router entropy", "bits / ratio",
            out / "specialization_mi.png", hline=rep["specialization"][0]["mi_max_bits"],
            hline_label="max MI log2(D)", dpi=dpi))
    for lay in sorted({c["layer"] for c in rep["causal"]}):
        rows = [c for c in rep["causal"] if c["layer"] == lay]
        series = {name: [c[f"delta_{name}"] for c in rows]
                  for name in ("top1", "top2", "random1", "random2")}
        add("causal", plots.grouped_bars(
            [c["domain"] for c in rows], series, f"layer {lay}: eval-loss change when experts "
            "are removed", "delta loss (nats)", out / f"causal_layer{lay}.png", dpi=dpi))
    tt = rep.get("token_types")
    if tt:
        for rec in tt["layers"]:
            add("token_types", plots.heatmap(
                np.array(rec["fractions"]), [f"{t} ({n})" for t, n in
                                             zip(tt["types"], tt["type_counts"], strict=True)],
                experts, f"layer {rec['layer']}: {tt['domain']} token type x top-1 expert",
                out / f"token_types_layer{rec['layer']}.png", uniform=1.0 / E, dpi=dpi))
    ft = rep.get("format_test")
    if ft and ft["shifts"]:
        groups = [f"{s['domain']}\n{s['transform']}" for s in ft["shifts"]]
        add("format", plots.grouped_bars(
            groups, {"format shift (TV)": [s["mean_tv"] for s in ft["shifts"]],
                     "tokens whose expert changed": [
                         float(np.mean([p["changed_share"] for p in s["layers"]]))
                         for s in ft["shifts"]]},
            "format shift vs mean between-domain distance", "TV distance / share",
            out / "format_test.png", hline=ft["mean_domain_distance"],
            hline_label="mean between-domain TV", dpi=dpi))
    cv = rep["curves"]["runs"]
    doms = sorted({d for c in cv.values() for d in c["eval_loss"]})
    add("curves", plots.curves(
        {dom: {lab: (c["eval_step"], c["eval_loss"].get(dom, [None] * len(c["eval_step"])))
               for lab, c in cv.items()} for dom in doms},
        "eval loss per domain", out / "curves_eval_loss.png", ylabel="loss", dpi=dpi))
    lay_ids = sorted({lay for c in cv.values() for lay in c["layers"]}, key=int)
    if lay_ids:
        for key, title in (("entropy_bits", "router entropy (bits)"),
                           ("imbalance", "load imbalance (max / mean)"),
                           ("mi_bits", "I(domain; expert) bits, from eval fractions")):
            add("curves", plots.curves(
                {f"layer {lay}": {lab: (c["layers"][lay]["step"], c["layers"][lay][key])
                                  for lab, c in cv.items() if lay in c["layers"]}
                 for lay in lay_ids}, title, out / f"curves_{key}.png", dpi=dpi))
    add("curves", plots.curves(
        {name: {lab: (c["train_step"], c[name]) for lab, c in cv.items()}
         for name in ("lm_loss", "lb_loss", "z_loss")},
        "training losses (lb/z: auxiliary, unweighted)", out / "curves_train_losses.png",
        dpi=dpi))
    return figs
