"""The training run's options: one dataclass, from which the command line is derived.

A field marked ``resume_safe`` may differ when a run is resumed (where the data lies, the
device, when to stop); every other field alters the run, and ``--resume`` with a different
value is refused unless ``--allow-change`` names it (train/run_dir.py).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

from train.cli import build_parser as _build_parser
from train.cli import comma_list, default_of, from_namespace, opt

COLLAPSE_SHARE = 0.6  # an expert taking more than this share of a layer's eval tokens
COLLAPSE_PATIENCE = 3  # --stop-on-collapse: consecutive collapsed evals that end the run

# The study's four runs: everything equal but these fields.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "dense": {"n_experts": 0, "top_k": 1, "lb_coef": 0.01},
    "moe-top1": {"n_experts": 8, "top_k": 1, "lb_coef": 0.01},
    "moe-top1-nolb": {"n_experts": 8, "top_k": 1, "lb_coef": 0.0},
    "moe-top2": {"n_experts": 8, "top_k": 2, "lb_coef": 0.01},
}


class TrainError(ValueError):
    """Bad options or an OUT directory the run must not touch."""


@dataclass
class TrainConfig:
    data: str = opt(help="dataset directory written by `python -m prep`", resume_safe=True)
    out: str = opt(help="run directory: ckpt.pt and metrics.jsonl go here", resume_safe=True)
    preset: str = opt("tiny", help="model size preset of train/model.py (tiny, gpt2)")
    experiment: str | None = opt(
        None, choices=sorted(EXPERIMENTS),
        help="one of the study's four runs: sets --n-experts/--top-k/--lb-coef (dense: 0 "
             "experts; moe-top1: 8 experts top-1; moe-top1-nolb: the same with lb_coef 0; "
             "moe-top2: 8 experts top-2), everything else unchanged")
    max_steps: int = opt(1000, help="optimizer steps of the whole run (the length of the "
                                    "cosine schedule)")
    stop_after: int | None = opt(
        None, resume_safe=True,
        help="end this process after this optimizer step with a checkpoint, as if "
             "interrupted; --resume continues it (the schedule still follows --max-steps)")
    keep_ckpt_every: int | None = opt(
        None, resume_safe=True,
        help="also keep a copy of the checkpoint as ckpt_<step>.pt at every eval whose step "
             "is a multiple of N (the report's router saturation compares them with the "
             "final one)")
    batch_size: int = opt(8, help="sequences per micro-batch per process")
    grad_accum: int = opt(1, help="micro-batches per optimizer step (per process); tokens per "
                                  "step = batch_size * grad_accum * block_size * processes")
    lr: float = opt(6e-4, help="peak learning rate")
    min_lr_ratio: float = opt(0.1, help="final learning rate as a fraction of --lr (cosine "
                                        "decay)")
    warmup: int = opt(100, help="linear warmup steps")
    weight_decay: float = opt(0.1, help="AdamW weight decay (matrices only)")
    beta1: float = opt(0.9, help="AdamW beta1")
    beta2: float = opt(0.95, help="AdamW beta2")
    grad_clip: float = opt(1.0, help="gradient norm clip (0 disables)")
    eval_every: int = opt(100, help="evaluate and checkpoint every N steps (and after the "
                                    "last step)")
    eval_batch_size: int | None = opt(None, resume_safe=True,
                                      help="sequences per eval batch (default: --batch-size)")
    eval_max_blocks: int | None = opt(
        None, help="score at most this many eval blocks per domain, evenly spaced (default: "
                   "every block; for quick runs)")
    seed: int = opt(1337, help="seed of the model init, router noise and sampler (each "
                               "process draws from (seed, rank))")
    resume: bool = opt(False, resume_safe=True,
                       help="continue the checkpoint in --out (refused if an option that "
                            "alters the run, the model config or the dataset differ; see "
                            "--allow-change)")
    allow_change: list[str] = opt(
        [], metavar="KEY", resume_safe=True,
        help="with --resume: accept these changed options (config field names, e.g. lr "
             "max_steps; data: other data, by fingerprint); each change is recorded in "
             "metrics.jsonl")
    overwrite: bool = opt(False, resume_safe=True,
                          help="start over in an --out that holds a run, deleting its "
                               "ckpt.pt, ckpt_*.pt and metrics.jsonl")
    skip_verify: bool = opt(False, resume_safe=True,
                            help="open the data checking paths and sizes only; by default "
                                 "every token id and sha256 is checked before step 0 "
                                 "(files unchanged since the last check are skipped)")
    compile: bool = opt(False, resume_safe=True, help="torch.compile the model for training")
    log_every: int | None = opt(
        None, resume_safe=True,
        help="read the steps' losses, gradient norms and the SIGTERM flag from the device once "
             "every N optimizer steps (and at every eval, checkpoint and the last step) instead "
             "of after every step, so the host never waits for the GPU in between; every step "
             "still gets its train record in metrics.jsonl, written at the read with the same "
             "values (tokens/s, dt_s and MFU: the interval's means); a SIGTERM or a non-finite "
             "loss is acted on at the next read. Default: 10 on CUDA, 1 on CPU (no asynchronous "
             "device there: a read costs nothing)")
    moe_impl: str = opt(
        "auto", choices=("auto", "grouped_mm", "bmm"), resume_safe=True,
        help="MoE expert dispatch (train/moe_layer.py): grouped_mm (torch._grouped_mm, no host "
             "sync; auto picks it on CUDA with compute capability >= 9.0) or bmm (padded batched "
             "matmul; reads each layer's largest expert count on the host); the model is the "
             "same")
    device: str = opt("auto", resume_safe=True,
                      help="auto (cuda if available, else cpu), cpu, cuda or cuda:N; under "
                           "torchrun each process takes cuda:LOCAL_RANK")
    block_size: int | None = opt(None, help="context length (default: the preset's)")
    n_experts: int | None = opt(None, help="experts per MoE layer; 0 = dense model with no "
                                           "router (default: the preset's)")
    top_k: int | None = opt(None, choices=(1, 2), help="experts per token")
    moe_layers: list[int] | None = opt(
        None, type=comma_list(int, "2,3"),
        help="comma list of block indices that are MoE, e.g. 2,3 (default: the last third of "
             "the layers)")
    lb_coef: float | None = opt(None, help="weight of the Switch load-balancing loss")
    z_coef: float | None = opt(None, help="weight of the router z-loss")
    router_noise: float | None = opt(
        None, help="initial std of the router logit noise, annealed linearly to 0 over the "
                   "first 25%% of steps (model default 0.1)")
    init_from: str | None = opt(
        None, resume_safe=True,
        help="upcycle: initialise every expert from this dense checkpoint "
             "(train/upcycle.py); ignored by --resume")
    domain_weights: str | None = opt(
        None, help="token share of each domain in training batches, e.g. code=1,math=1,prose=1 "
                   "(default: equal shares; 0 leaves a domain out)")
    stop_on_collapse: bool = opt(
        False, help=f"end the run after {COLLAPSE_PATIENCE} evals in a row in which one expert "
                    f"takes more than {COLLAPSE_SHARE * 100:.0f}%% of a MoE layer's eval tokens")

    def overrides(self) -> dict[str, Any]:
        """GPTConfig fields set on the command line (and by --experiment)."""
        o: dict[str, Any] = {}
        for name, key in (("block_size", "block_size"), ("n_experts", "n_experts"),
                          ("top_k", "top_k"), ("lb_coef", "lb_coef"), ("z_coef", "z_coef"),
                          ("router_noise", "router_noise_std")):
            v = getattr(self, name)
            if v is not None:
                o[key] = v
        if self.moe_layers is not None:
            o["moe_layers"] = tuple(self.moe_layers)
        if self.moe_impl != "auto":
            o["moe_impl"] = self.moe_impl
        return o


RUN_KEYS = tuple(f.name for f in fields(TrainConfig) if not f.metadata.get("resume_safe"))
# what --allow-change may name: the options above, and "data": the dataset's content (its
# fingerprint; the --data path alone may always change)
ALLOWABLE = (*RUN_KEYS, "data")


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(
        TrainConfig, prog="train/moe.py",
        description="Train a GPT-2 mixture-of-experts (or dense) model on a shards dataset "
                    "(python train/moe.py ... or torchrun --standalone --nproc_per_node N "
                    "train/moe.py ...).")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    cfg = from_namespace(TrainConfig, build_parser().parse_args(argv))
    if cfg.experiment:
        for key, value in EXPERIMENTS[cfg.experiment].items():
            given = getattr(cfg, key)
            if given is not None and given != value:
                flag = "--" + key.replace("_", "-")
                raise TrainError(f"--experiment {cfg.experiment} sets {flag} {value}; "
                                 f"drop {flag} {given} or --experiment")
            setattr(cfg, key, value)
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.log_every is not None and cfg.log_every < 1:
        raise TrainError("--log-every must be >= 1")
    if cfg.warmup < 0:
        raise TrainError("--warmup must be >= 0")
    if cfg.stop_after is not None and not 1 <= cfg.stop_after <= cfg.max_steps:
        raise TrainError(f"--stop-after must be in 1..--max-steps ({cfg.max_steps})")
    if cfg.resume and cfg.overwrite:
        raise TrainError("--resume and --overwrite exclude each other")
    if cfg.allow_change and not cfg.resume:
        raise TrainError("--allow-change applies to --resume only")
    unknown = [k for k in cfg.allow_change if k not in ALLOWABLE]
    if unknown:
        raise TrainError(f"--allow-change {' '.join(unknown)}: not an option that alters the "
                         f"run; those are: {' '.join(ALLOWABLE)}")
    return cfg


def run_changes(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Options that alter the run and differ from the checkpoint's: key -> (saved, now).

    A key the checkpoint lacks (written by an older version) counts as its default."""
    now = asdict(cfg)
    defaults = {f.name: default_of(f) for f in fields(TrainConfig)}
    return {k: (saved.get(k, defaults[k]), now[k]) for k in RUN_KEYS
            if saved.get(k, defaults[k]) != now[k]}
