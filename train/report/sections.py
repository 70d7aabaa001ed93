"""The report's sections: each computes its numbers (what report.json holds) from the routed
eval tokens (routing.py), the model, the dataset or the runs' metrics.

The measures are defined in train/report/specialization.py, the token types in train/report/token_types.py;
the format-artifact test (train/report/format_test.py) is run by build.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shards.tokenizer import EOT_ID
from train.eval_data import EvalSet
from train.evaluation import Evaluation
from train.report import specialization as sp
from train.report.config import ReportConfig, ReportError
from train.report.routing import domain_loss, load_model, route_again
from train.report.token_types import TOKEN_TYPES, bpe_token_types


def specialization_section(r: Evaluation, E: int, k: int) -> list[dict[str, Any]]:
    D = len(r.domains)
    out = []
    for li, layer in enumerate(r.layers):
        c1 = sp.assignment_counts(r.domain, r.topk[li], D, E, top1=True)
        ck = sp.assignment_counts(r.domain, r.topk[li], D, E, top1=False)
        ntok = np.bincount(r.domain, minlength=D)
        top_e, top_share = sp.top_expert_share(c1)
        mi = sp.mutual_information(c1)
        ent_dom = [float(r.entropy_bits[li][r.domain == d].mean()) for d in range(D)]
        rec: dict[str, Any] = {
            "layer": layer,
            "tokens": ntok.tolist(),
            "fractions_top1": sp.routing_fractions(c1).tolist(),
            "fractions_topk": sp.routing_fractions(ck, ntok).tolist(),
            "uniform_top1": 1.0 / E,
            "uniform_topk": k / E,
            "top_expert": top_e.tolist(),
            "top_share": top_share.tolist(),
            "mi_bits": mi,
            "mi_max_bits": math.log2(D) if D > 1 else 0.0,
            "mi_topk_bits": sp.mutual_information(ck),
            "entropy_bits": float(r.entropy_bits[li].mean()),
            "entropy_by_domain_bits": ent_dom,
            "entropy_max_bits": math.log2(E),
            "load": sp.expert_load(r.topk[li], E).tolist(),
            "max_load_violation": sp.max_load_violation(r.topk[li], E),
            "vocab_specialization": sp.vocab_specialization(r.token_ids, r.topk[li], E),
            "vocab_specialization_topk": sp.vocab_specialization(r.token_ids, r.topk[li], E,
                                                                 top1=False),
            "coactivation": sp.coactivation(r.topk[li], E).tolist() if k > 1 else None,
        }
        out.append(rec)
    return out


def causal_section(model: Any, es: EvalSet, r: Evaluation, spec: list[dict[str, Any]], E: int,
                   k: int, seed: int) -> list[dict[str, Any]]:
    """Eval-loss change of each domain when its most-used expert (then top 2) is removed from
    one layer's routing, against removing as many random other experts (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in spec:
        layer = rec["layer"]
        for d, dom in enumerate(r.domains):
            order = np.argsort(-np.asarray(rec["fractions_top1"][d]), kind="stable")
            top2 = [int(e) for e in order[:2]]
            others = [e for e in range(E) if e not in top2]
            rand2 = [int(e) for e in rng.choice(others, size=min(2, len(others)), replace=False)]
            row: dict[str, Any] = {"layer": layer, "domain": dom, "base": r.loss[d],
                                   "top1_experts": top2[:1], "top2_experts": top2,
                                   "random1_experts": rand2[:1], "random2_experts": rand2}
            for name, removed in (("top1", top2[:1]), ("top2", top2), ("random1", rand2[:1]),
                                  ("random2", rand2)):
                if E - len(removed) < k:
                    row[f"delta_{name}"] = None
                    continue
                model.set_expert_mask(layer, removed)
                try:
                    row[f"delta_{name}"] = domain_loss(model, es, d) - r.loss[d]
                finally:
                    model.set_expert_mask(layer, None)
            out.append(row)
    return out


def saturation_section(cfg: ReportConfig, run_dir: Path, es: EvalSet, r: Evaluation,
                       final_step: int, final_config: dict[str, Any],
                       device: torch.device) -> list[dict[str, Any]]:
    """Router saturation against each earlier checkpoint (--early-ckpt, RUN_DIR/ckpt_*.pt)."""
    paths = [Path(p) for p in cfg.early_ckpt]
    paths += sorted(p for p in run_dir.glob("ckpt_*.pt") if p not in paths)
    out = []
    for p in paths:
        model, ckpt = load_model(p, device)
        if ckpt["model_config"] != final_config:
            diff = sorted(k for k in final_config
                          if ckpt["model_config"].get(k) != final_config[k])
            raise ReportError(f"{p}: its model config differs from the final checkpoint's "
                              f"(fields {', '.join(diff) or 'set'}); --early-ckpt must be an "
                              "earlier checkpoint of the same run")
        early = route_again(model, es)
        out.append({"path": str(p), "step": int(ckpt.get("step", -1)), "final_step": final_step,
                    "layers": [{"layer": lay, "overlap": sp.saturation(early[li], r.topk[li])}
                               for li, lay in enumerate(model.moe_layer_ids)]})
    return out


def token_type_section(model: Any, enc: Any, ds: Any, domain: str, max_tokens: int,
                       block_size: int, E: int) -> dict[str, Any] | None:
    if domain not in ds.domains:
        return None
    split = ds.split(domain, "eval")
    L = len(model.moe_layer_ids)
    counts = np.zeros((L, len(TOKEN_TYPES), E), dtype=np.int64)
    n = 0
    for kdoc in range(split.num_docs):
        if n >= max_tokens:
            break
        ids = np.asarray(split.document_tokens(kdoc), dtype=np.int64)
        ids = ids[ids != EOT_ID][:max_tokens - n]
        if not len(ids):
            continue
        # classify the whole (capped) document, so a docstring cut by a block is still a
        # string; route it in windows of block_size tokens
        _, types = bpe_token_types(enc, ids.tolist())
        for start in range(0, len(ids), block_size):
            routing = sp.route_tokens(model, ids[start:start + block_size])
            t = types[start:start + block_size].astype(np.int64)
            for li in range(L):
                np.add.at(counts[li], (t, routing[li][0, :, 0]), 1)
        n += len(ids)
    per_type = counts[0].sum(axis=1) if L else np.zeros(len(TOKEN_TYPES), dtype=np.int64)
    return {"domain": domain, "tokens": n, "types": list(TOKEN_TYPES),
            "type_counts": per_type.tolist(),
            "layers": [{"layer": lay, "counts": counts[li].tolist(),
                        "fractions": sp.routing_fractions(counts[li]).tolist(),
                        "mi_bits": sp.mutual_information(counts[li])}
                       for li, lay in enumerate(model.moe_layer_ids)]}


def eval_docs(ds: Any, max_tokens: int, block_size: int) -> dict[str, list[str]]:
    """Each domain's eval document texts, until about `max_tokens` tokens (a document counts
    at most `block_size`: the format test routes one block per document)."""
    out: dict[str, list[str]] = {}
    for d in ds.domains:
        split = ds.split(d, "eval")
        texts, n = [], 0
        for kdoc in range(split.num_docs):
            if n >= max_tokens:
                break
            texts.append(split.document_text(kdoc))
            n += min(split.document(kdoc).tokens, block_size)
        out[d] = texts
    return out


def curves_section(runs: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per run: eval steps, per-domain eval loss, per-layer entropy/imbalance/MI, train aux
    losses; and the step-matched comparison at the last eval step all runs share."""
    out: dict[str, Any] = {"runs": {}}
    step_sets = []
    for label, metrics in runs:
        ev = [m for m in metrics if m["kind"] == "eval"]
        tr = [m for m in metrics if m["kind"] == "train"]
        layers: dict[str, dict[str, list[Any]]] = {}
        for m in ev:
            for lay in m.get("layers", []):
                d = layers.setdefault(str(lay["layer"]), {"step": [], "entropy_bits": [],
                                                          "imbalance": [], "mi_bits": []})
                d["step"].append(m["step"])
                d["entropy_bits"].append(lay["entropy"] / math.log(2))
                d["imbalance"].append(lay.get("imbalance"))
                d["mi_bits"].append(sp.mi_from_fractions(lay["fractions"],
                                                         m.get("blocks", {})))
        out["runs"][label] = {
            "eval_step": [m["step"] for m in ev],
            "eval_loss": {dom: [m["loss"].get(dom) for m in ev]
                          for dom in (ev[0]["loss"] if ev else {})},
            "eval_loss_macro": [m.get("loss_macro") for m in ev],
            "layers": layers,
            "train_step": [m["step"] for m in tr],
            "lm_loss": [m.get("lm_loss") for m in tr],
            "lb_loss": [m.get("lb_loss") for m in tr],
            "z_loss": [m.get("z_loss") for m in tr],
        }
        step_sets.append({m["step"] for m in ev})
    common = set.intersection(*step_sets) if step_sets else set()
    out["common_step"] = max(common) if common else None
    out["last_steps"] = {label: (max(s) if s else None)
                         for (label, _), s in zip(runs, step_sets, strict=True)}
    out["step_matched"] = len({v for v in out["last_steps"].values()}) == 1
    if out["common_step"] is not None:
        table = {}
        for label, _ in runs:
            c = out["runs"][label]
            i = c["eval_step"].index(out["common_step"])
            table[label] = {"macro": c["eval_loss_macro"][i],
                            **{dom: v[i] for dom, v in c["eval_loss"].items()}}
        out["at_common_step"] = table
    return out
