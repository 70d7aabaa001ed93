"""The expert-specialization report of a training run.

    python -m train.report RUN_DIR [--data DIR] [--compare OTHER_RUN ...] [--max-tokens 20000]

Loads RUN_DIR/ckpt.pt and RUN_DIR/metrics.jsonl (written by train/moe.py), routes up to
``--max-tokens`` eval tokens per domain, and writes RUN_DIR/report/ (or ``--out``):
``report.md`` (readable on its own, figures linked), ``report.json`` (the numbers behind every
figure) and the PNG figures. Sections: routing fractions, specialization scores (top-expert
share, mutual information, router entropy), the causal expert-removal test, the OLMoE/Mixtral
measures (domain share vs k/E, vocabulary specialization, co-activation, router saturation,
maximum load violation), curves over training (with ``--compare``: several runs on one plot),
token-type routing for code and the format-artifact test. The measures are defined in
train/specialization.py, the token types in train/token_types.py, the format test in
train/format_test.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import shards
from shards.console import Out
from shards.format import FormatError
from shards.tokenizer import EOT_ID, load_gpt2
from train import specialization as sp
from train.format_test import DEFAULT_THRESHOLD, run_format_test
from train.plots import PlotError
from train.token_types import TOKEN_TYPES, bpe_token_types

METRICS_NAME = "metrics.jsonl"
CKPT_NAME = "ckpt.pt"


class ReportError(ValueError):
    """A run directory, checkpoint or option the report cannot use."""


@dataclass
class ReportConfig:
    run_dir: str
    data: str | None = None
    compare: list[str] = field(default_factory=list)
    out: str | None = None
    max_tokens: int = 20000
    batch_size: int = 8
    seed: int = 0
    early_ckpt: list[str] = field(default_factory=list)
    code_domain: str = "code"
    format_threshold: float = DEFAULT_THRESHOLD
    no_causal: bool = False
    no_plots: bool = False
    dpi: int = 80
    device: str = "cpu"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.report",
        description="Write the expert-specialization report of a train/moe.py run into "
                    "RUN_DIR/report/ (report.md, report.json, PNG figures).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("run_dir", help="run directory of train/moe.py (holds ckpt.pt and metrics.jsonl)")
    a("--data", default=None, help="dataset directory (python -m prep output) to evaluate on; "
      "default: the data_dir recorded in the checkpoint")
    a("--compare", nargs="+", default=[], metavar="OTHER_RUN", help="other run directories "
      "whose metrics.jsonl curves go on the same plots (e.g. dense, no-load-balancing, top-2)")
    a("--out", default=None, help="output directory (None: RUN_DIR/report)")
    a("--max-tokens", type=int, default=20000, help="eval tokens per domain to route (also caps "
      "the token-type and format tests); lower it for a quicker report")
    a("--batch-size", type=int, default=8, help="sequences per forward pass")
    a("--seed", type=int, default=0, help="seed of the random-expert choice in the causal test")
    a("--early-ckpt", action="append", default=[], metavar="PATH", help="an earlier checkpoint "
      "of the same run for router saturation (repeatable; RUN_DIR/ckpt_*.pt are used too)")
    a("--code-domain", default="code", help="the domain whose documents are Python source "
      "(token-type routing)")
    a("--format-threshold", type=float, default=DEFAULT_THRESHOLD, help="format-test verdict "
      "rule: 'format' if the mean format shift >= this x the mean between-domain distance")
    a("--no-causal", action="store_true", help="skip the expert-removal test (the slowest part)")
    a("--no-plots", action="store_true", help="write report.md/report.json without figures "
      "(no matplotlib needed)")
    a("--dpi", type=int, default=80, help="PNG resolution")
    a("--device", default="cpu", help="torch device for the forward passes (cpu, cuda, cuda:N)")
    return p


def parse_args(argv: list[str] | None = None) -> ReportConfig:
    ns = build_parser().parse_args(argv)
    cfg = ReportConfig(**vars(ns))
    if cfg.max_tokens < 1:
        raise ReportError("--max-tokens must be >= 1")
    if cfg.batch_size < 1:
        raise ReportError("--batch-size must be >= 1")
    if cfg.format_threshold <= 0:
        raise ReportError("--format-threshold must be > 0")
    return cfg


# --------------------------------------------------------------------------- loading


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_NAME
    if not path.is_file():
        raise ReportError(f"{path}: no metrics here; is {run_dir} a train/moe.py run directory?")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: line {n} is not JSON ({e}); the file is damaged") from e
        if not isinstance(rec, dict) or "kind" not in rec:
            raise ReportError(f"{path}: line {n} has no 'kind' field")
        out.append(rec)
    return out


def run_label(run_dir: Path, metrics: list[dict[str, Any]]) -> str:
    for rec in reversed(metrics):
        if rec["kind"] == "summary" and rec.get("experiment"):
            return str(rec["experiment"])
    return run_dir.name


def load_model(path: Path, device: torch.device) -> tuple[Any, dict[str, Any]]:
    from train.checkpoint import CheckpointError, load_checkpoint
    from train.model import GPT, GPTConfig

    if not path.is_file():
        raise ReportError(f"{path}: no checkpoint here; train the run first (train/moe.py)")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise ReportError(str(e)) from e
    mc = dict(ckpt["model_config"])
    if isinstance(mc.get("moe_layers"), list):
        mc["moe_layers"] = tuple(mc["moe_layers"])
    model = GPT(GPTConfig(**mc))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt


# --------------------------------------------------------------------------- routing the eval data


@dataclass
class Routed:
    """The eval tokens of every domain and, per MoE layer, their routing."""

    domains: list[str]
    inputs: list[list[np.ndarray]]  # per domain: (B, T) input batches
    targets: list[list[np.ndarray]]
    loss: list[float]  # per domain mean LM loss
    token_ids: np.ndarray  # (N,) all routed input tokens, domain after domain
    domain: np.ndarray  # (N,) domain index
    topk: list[np.ndarray]  # per layer (N, k)
    entropy: list[np.ndarray]  # per layer (N,) router entropy in bits


def eval_batches(ds: Any, block_size: int, batch_size: int, max_tokens: int
                 ) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Up to `max_tokens` eval tokens per domain (whole blocks, at least one) as (x, y)
    batches of evenly spaced blocks."""
    from train.data import EvalSet

    blocks = max(1, max_tokens // block_size)
    es = EvalSet(ds, block_size=block_size, batch_size=batch_size, max_blocks=blocks)
    xs: list[list[np.ndarray]] = []
    ys: list[list[np.ndarray]] = []
    for d in range(len(es.domains)):
        bx, by = [], []
        for x, y, n_valid in es.batches(d):
            if n_valid:
                bx.append(x[:n_valid].numpy().copy())
                by.append(y[:n_valid].numpy().copy())
        if not bx:
            raise ReportError(f"{ds.root}: domain {es.domains[d]!r} has no eval block of "
                              f"{block_size + 1} tokens; the eval split is too small")
        xs.append(bx)
        ys.append(by)
    return xs, ys


@torch.no_grad()
def domain_loss(model: Any, xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    dev = sp.model_device(model)
    total = n = 0.0
    for x, y in zip(xs, ys, strict=True):
        out = model(torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev))
        total += float(out.lm_loss) * y.size
        n += y.size
    return total / max(n, 1.0)


@torch.no_grad()
def route_eval(model: Any, domains: list[str], xs: list[list[np.ndarray]],
               ys: list[list[np.ndarray]]) -> Routed:
    dev = sp.model_device(model)
    L = len(model.moe_layer_ids)
    topk: list[list[np.ndarray]] = [[] for _ in range(L)]
    ent: list[list[np.ndarray]] = [[] for _ in range(L)]
    tok, dom, losses = [], [], []
    for d in range(len(domains)):
        total = n = 0.0
        for x, y in zip(xs[d], ys[d], strict=True):
            out = model(torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev),
                        return_routing=L > 0)
            total += float(out.lm_loss) * y.size
            n += y.size
            tok.append(x.reshape(-1))
            dom.append(np.full(x.size, d, dtype=np.int64))
            for li in range(L):
                topk[li].append(out.routing[li].reshape(-1, out.routing[li].shape[-1]).cpu()
                                .numpy().astype(np.int64))
                p = out.router_probs[li].reshape(-1, out.router_probs[li].shape[-1]).float()
                ent[li].append(sp.entropy_bits(p.cpu().numpy()))
        losses.append(total / max(n, 1.0))
    return Routed(domains=domains, inputs=xs, targets=ys, loss=losses,
                  token_ids=np.concatenate(tok), domain=np.concatenate(dom),
                  topk=[np.concatenate(t) for t in topk], entropy=[np.concatenate(e) for e in ent])


@torch.no_grad()
def route_inputs(model: Any, xs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per layer (N, k) routing of the same inputs as `route_eval` (for saturation)."""
    L = len(model.moe_layer_ids)
    out: list[list[np.ndarray]] = [[] for _ in range(L)]
    for batches in xs:
        for x in batches:
            r = sp.route_tokens(model, x)
            for li in range(L):
                out[li].append(r[li].reshape(-1, r[li].shape[-1]))
    return [np.concatenate(o) for o in out]


# --------------------------------------------------------------------------- sections


def specialization_section(r: Routed, layers: list[int], E: int, k: int) -> list[dict[str, Any]]:
    D = len(r.domains)
    out = []
    for li, layer in enumerate(layers):
        c1 = sp.assignment_counts(r.domain, r.topk[li], D, E, top1=True)
        ck = sp.assignment_counts(r.domain, r.topk[li], D, E, top1=False)
        ntok = np.bincount(r.domain, minlength=D)
        top_e, top_share = sp.top_expert_share(c1)
        mi = sp.mutual_information(c1)
        ent_dom = [float(r.entropy[li][r.domain == d].mean()) for d in range(D)]
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
            "entropy_bits": float(r.entropy[li].mean()),
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


def causal_section(model: Any, r: Routed, spec: list[dict[str, Any]], E: int, k: int,
                   seed: int) -> list[dict[str, Any]]:
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
                    row[f"delta_{name}"] = domain_loss(model, r.inputs[d], r.targets[d]) - r.loss[d]
                finally:
                    model.set_expert_mask(layer, None)
            out.append(row)
    return out


def saturation_section(cfg: ReportConfig, run_dir: Path, r: Routed, final_step: int,
                       final_config: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
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
        early = route_inputs(model, r.inputs)
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


# --------------------------------------------------------------------------- figures + markdown


def make_figures(rep: dict[str, Any], out: Path, dpi: int) -> dict[str, list[str]]:
    from train import plots

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


# --------------------------------------------------------------------------- orchestration


def build_report(cfg: ReportConfig, log: Any = None) -> dict[str, Any]:
    """Compute every section; returns the report dict (what report.json holds)."""
    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    run_dir = Path(cfg.run_dir)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    metrics = read_metrics(run_dir)
    model, ckpt = load_model(run_dir / CKPT_NAME, device)
    data = cfg.data or ckpt.get("data_dir")
    if not data:
        raise ReportError(f"{run_dir / CKPT_NAME}: records no data_dir; pass --data")
    ds = shards.open(data)
    if ckpt.get("data_fingerprint") and ckpt["data_fingerprint"] != ds.fingerprint:
        say(f"note: {data} is not the dataset the run trained on (fingerprint differs)")
    enc = load_gpt2()
    mcfg = model.config
    layers = list(model.moe_layer_ids)
    E = mcfg.n_experts if layers else 0
    k = mcfg.top_k
    bs = mcfg.block_size
    say(f"routing up to {cfg.max_tokens:,} eval tokens per domain of {data}")
    xs, ys = eval_batches(ds, bs, cfg.batch_size, cfg.max_tokens)
    routed = route_eval(model, list(ds.domains), xs, ys)
    label = run_label(run_dir, metrics)
    rep: dict[str, Any] = {
        "label": label, "run_dir": str(run_dir), "data": str(data), "step": int(ckpt.get("step", 0)),
        "domains": routed.domains, "layers": layers, "n_experts": E, "top_k": k,
        "max_tokens": cfg.max_tokens, "seed": cfg.seed, "code_domain": cfg.code_domain,
        "eval_tokens": {d: int(sum(x.size for x in xs[i])) for i, d in enumerate(ds.domains)},
        "eval_loss": routed.loss, "specialization": [], "causal": [], "saturation": [],
        "token_types": None, "format_test": None,
    }
    if layers:
        rep["specialization"] = specialization_section(routed, layers, E, k)
        if not cfg.no_causal:
            say("causal test: removing experts")
            rep["causal"] = causal_section(model, routed, rep["specialization"], E, k, cfg.seed)
        rep["saturation"] = saturation_section(cfg, run_dir, routed, rep["step"],
                                               ckpt["model_config"], device)
        say("token types and format test")
        rep["token_types"] = token_type_section(model, enc, ds, cfg.code_domain, cfg.max_tokens,
                                                bs, E)
        rep["format_test"] = run_format_test(
            model, enc, eval_docs(ds, cfg.max_tokens, bs), n_experts=E, block_size=bs,
            threshold=cfg.format_threshold, max_tokens=cfg.max_tokens).to_dict()
    runs = [(label, metrics)]
    for other in cfg.compare:
        od = Path(other)
        om = read_metrics(od)
        runs.append((run_label(od, om), om))
    labels = [lab for lab, _ in runs]
    if len(set(labels)) != len(labels):  # two runs of the same experiment: use directory names
        runs = [(Path(p).name, m) for p, (_, m) in zip([cfg.run_dir, *cfg.compare], runs,
                                                         strict=True)]
    rep["curves"] = curves_section(runs)
    return rep


def write_report(cfg: ReportConfig, rep: dict[str, Any]) -> Path:
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    figs = {} if cfg.no_plots else make_figures(rep, out, cfg.dpi)
    rep["figures"] = figs
    (out / "report.json").write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(rep, figs), encoding="utf-8")
    return out


def print_summary(con: Out, rep: dict[str, Any], out: Path) -> None:
    """The headline numbers on the terminal (rich table on a TTY, plain lines otherwise)."""
    rows = []
    for rec in rep["specialization"]:
        for d, dom in enumerate(rep["domains"]):
            causal = next((c for c in rep["causal"]
                           if c["layer"] == rec["layer"] and c["domain"] == dom), None)
            rows.append([rec["layer"], dom, f"e{rec['top_expert'][d]}", rec["top_share"][d],
                         rec["mi_bits"], rec["entropy_by_domain_bits"][d],
                         causal["delta_top1"] if causal else "-",
                         causal["delta_random1"] if causal else "-"])
    if rows:
        con.table(f"{rep['label']} at step {rep['step']}: specialization",
                  ["layer", "domain", "top expert", "top share", "MI bits", "entropy bits",
                   "dloss top-1 removed", "dloss random removed"], rows)
    ft = rep.get("format_test")
    if ft:
        con.line(ft["verdict_line"])
    con.line(f"wrote {out / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    con = Out()
    err = Out(sys.stderr)
    try:
        cfg = parse_args(argv)
        rep = build_report(cfg, log=err.line)
        out = write_report(cfg, rep)
    except (ReportError, FormatError, ValueError, OSError, PlotError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(con, rep, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
