"""Building the report: load the run, route the eval data, compute every section, write it.

Loads RUN_DIR/ckpt.pt (checksum verified) and RUN_DIR/metrics.jsonl, opens the data with
``verify="full"`` (``--skip-verify``: sizes only), routes up to ``--max-tokens`` eval tokens per
domain and writes RUN_DIR/report/ (or ``--out``): ``report.md``, ``report.json`` (the numbers
behind every figure, and the data check) and the PNG figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

import shards
from shards.atomic import write_text
from shards.console import Out
from shards.format import FormatError
from shards.tokenizer import load_gpt2
from train.checkpoint import CKPT_NAME
from train.metrics import METRICS_NAME, read_metrics
from train.report.config import ReportConfig, ReportError, parse_args
from train.report.figures import make_figures
from train.report.format_test import run_format_test
from train.report.markdown import render_markdown
from train.report.plots import PlotError
from train.report.routing import eval_set, load_model, route
from train.report.sections import (
    causal_section,
    curves_section,
    eval_docs,
    saturation_section,
    specialization_section,
    token_type_section,
)


def run_label(run_dir: Path, metrics: list[dict[str, Any]]) -> str:
    for rec in reversed(metrics):
        if rec["kind"] == "summary" and rec.get("experiment"):
            return str(rec["experiment"])
    return run_dir.name


def build_report(cfg: ReportConfig, log: Any = None) -> dict[str, Any]:
    """Compute every section; returns the report dict (what report.json holds)."""
    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    run_dir = Path(cfg.run_dir)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    metrics = read_metrics(run_dir / METRICS_NAME)
    model, ckpt = load_model(run_dir / CKPT_NAME, device)
    data = cfg.data or ckpt.get("data_dir")
    if not data:
        raise ReportError(f"{run_dir / CKPT_NAME}: records no data_dir; pass --data")
    ds = shards.open(data, verify="sizes" if cfg.skip_verify else "full")
    say(ds.verification.summary())
    if ckpt.get("data_fingerprint") and ckpt["data_fingerprint"] != ds.fingerprint:
        say(f"note: {data} is not the dataset the run trained on (fingerprint differs)")
    enc = load_gpt2()
    mcfg = model.config
    layers = list(model.moe_layer_ids)
    E = mcfg.n_experts if layers else 0
    k = mcfg.top_k
    bs = mcfg.block_size
    say(f"routing up to {cfg.max_tokens:,} eval tokens per domain of {data}")
    es = eval_set(ds, bs, cfg.batch_size, cfg.max_tokens)
    routed = route(model, es)
    label = run_label(run_dir, metrics)
    rep: dict[str, Any] = {
        "label": label, "run_dir": str(run_dir), "data": str(data), "step": int(ckpt.get("step", 0)),
        "domains": routed.domains, "layers": layers, "n_experts": E, "top_k": k,
        "max_tokens": cfg.max_tokens, "seed": cfg.seed, "code_domain": cfg.code_domain,
        "eval_tokens": dict(zip(routed.domains, routed.tokens, strict=True)),
        "eval_loss": routed.loss, "specialization": [], "causal": [], "saturation": [],
        "token_types": None, "format_test": None, "data_check": ds.verification.to_dict(),
    }
    if layers:
        rep["specialization"] = specialization_section(routed, E, k)
        if not cfg.no_causal:
            say("causal test: removing experts")
            rep["causal"] = causal_section(model, es, routed, rep["specialization"], E, k,
                                           cfg.seed)
        rep["saturation"] = saturation_section(cfg, run_dir, es, routed, rep["step"],
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
        om = read_metrics(od / METRICS_NAME)
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
    write_text(out / "report.json", json.dumps(rep, indent=1) + "\n")
    write_text(out / "report.md", render_markdown(rep, figs))
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
