"""Train a small GPT-2 mixture-of-experts (or its dense baseline) on a shards dataset.

    python train/moe.py --data shards_out --out runs/tiny --preset tiny --experiment moe-top1
    torchrun --standalone --nproc_per_node 2 train/moe.py --data shards_out --out runs/ddp ...

One optimizer step: reset the MoE load counts, anneal the router noise, run `--grad-accum`
micro-batches (DDP gradient sync on the last only), clip gradients to 1.0, AdamW step on a
cosine schedule with warmup. Every step logs the LM and auxiliary losses, lr, tokens/s and (on
CUDA) MFU; every `--eval-every` steps the whole eval split of every domain is scored (per-domain
LM loss, macro average, and per MoE layer the domain x expert routing fractions, router entropy,
load imbalance and collapse warnings) and a checkpoint is written atomically. Everything goes to
OUT/metrics.jsonl as well as the terminal; only rank 0 logs and writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script: make `shards` and `train` importable
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import shards  # noqa: E402
from shards.console import Out  # noqa: E402
from shards.format import FormatError  # noqa: E402
from train.checkpoint import (  # noqa: E402
    CKPT_NAME,
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from train.data import DataError, EvalSet, TrainSampler, parse_domain_weights  # noqa: E402

METRICS_NAME = "metrics.jsonl"
COLLAPSE_SHARE = 0.6  # an expert taking more than this share of a layer's eval tokens
COLLAPSE_PATIENCE = 3  # --stop-on-collapse: consecutive collapsed evals that end the run
NOISE_ANNEAL_FRACTION = 0.25  # router noise goes linearly to 0 over this fraction of steps
EXIT_NONFINITE = 3

# bf16 dense (no sparsity) tensor-core peaks, FLOP/s, by a substring of the CUDA device name.
# Checked in order: the first match wins, so specific names come before general ones.
PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5 / HBM3
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
]

# The study's four runs: everything equal but these fields.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "dense": {"n_experts": 0, "top_k": 1, "lb_coef": 0.01},
    "moe-top1": {"n_experts": 8, "top_k": 1, "lb_coef": 0.01},
    "moe-top1-nolb": {"n_experts": 8, "top_k": 1, "lb_coef": 0.0},
    "moe-top2": {"n_experts": 8, "top_k": 2, "lb_coef": 0.01},
}


class TrainError(ValueError):
    """Bad options or an OUT directory the run must not touch."""


def peak_flops(device_name: str) -> float | None:
    """The bf16 dense peak of a CUDA device by name; None when the device is not in the table."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "tiny"
    experiment: str | None = None
    max_steps: int = 1000
    stop_after: int | None = None
    keep_ckpt_every: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batch_size: int | None = None
    eval_max_blocks: int | None = None
    seed: int = 1337
    resume: bool = False
    overwrite: bool = False
    compile: bool = False
    device: str = "auto"
    block_size: int | None = None
    n_experts: int | None = None
    top_k: int | None = None
    moe_layers: list[int] | None = None
    lb_coef: float | None = None
    z_coef: float | None = None
    router_noise: float | None = None
    init_from: str | None = None
    domain_weights: str | None = None
    stop_on_collapse: bool = False

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
        return o


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only for flags whose default is a value (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action) or ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train/moe.py",
        description="Train a GPT-2 mixture-of-experts (or dense) model on a shards dataset "
                    "(python train/moe.py ... or torchrun --standalone --nproc_per_node N "
                    "train/moe.py ...).",
        formatter_class=_HelpFormatter)
    a = p.add_argument
    a("--data", required=True, help="dataset directory written by `python -m prep`")
    a("--out", required=True, help="run directory: ckpt.pt and metrics.jsonl go here")
    a("--preset", default="tiny", help="model size preset of train/model.py (tiny, gpt2)")
    a("--experiment", choices=sorted(EXPERIMENTS), default=None,
      help="one of the study's four runs: sets --n-experts/--top-k/--lb-coef "
           "(dense: 0 experts; moe-top1: 8 experts top-1; moe-top1-nolb: the same with "
           "lb_coef 0; moe-top2: 8 experts top-2), everything else unchanged")
    a("--max-steps", type=int, default=1000, help="optimizer steps of the whole run (the "
      "length of the cosine schedule)")
    a("--stop-after", type=int, default=None, help="end this process after this optimizer "
      "step with a checkpoint, as if interrupted; --resume continues it (the schedule still "
      "follows --max-steps)")
    a("--keep-ckpt-every", type=int, default=None, help="also keep a copy of the checkpoint as "
      "ckpt_<step>.pt at every eval whose step is a multiple of N (the report's router "
      "saturation compares them with the final one)")
    a("--batch-size", type=int, default=8, help="sequences per micro-batch per process")
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (per "
      "process); tokens per step = batch_size * grad_accum * block_size * processes")
    a("--lr", type=float, default=6e-4, help="peak learning rate")
    a("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of "
      "--lr (cosine decay)")
    a("--warmup", type=int, default=100, help="linear warmup steps")
    a("--weight-decay", type=float, default=0.1, help="AdamW weight decay (matrices only)")
    a("--beta1", type=float, default=0.9, help="AdamW beta1")
    a("--beta2", type=float, default=0.95, help="AdamW beta2")
    a("--grad-clip", type=float, default=1.0, help="gradient norm clip (0 disables)")
    a("--eval-every", type=int, default=100, help="evaluate and checkpoint every N steps "
      "(and after the last step)")
    a("--eval-batch-size", type=int, default=None, help="sequences per eval batch "
      "(default: --batch-size)")
    a("--eval-max-blocks", type=int, default=None, help="score at most this many eval blocks "
      "per domain, evenly spaced (default: every block; for quick runs)")
    a("--seed", type=int, default=1337, help="seed of the model init, router noise and sampler "
      "(each process draws from (seed, rank))")
    a("--resume", action="store_true", help="continue the checkpoint in --out (refused if the "
      "model config or the dataset differ)")
    a("--overwrite", action="store_true", help="start over in an --out that holds a "
      "checkpoint, deleting its ckpt.pt and metrics.jsonl")
    a("--compile", action="store_true", help="torch.compile the model for training")
    a("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or "
      "cuda:N; under torchrun each process takes cuda:LOCAL_RANK")
    a("--block-size", type=int, default=None, help="context length (default: the preset's)")
    a("--n-experts", type=int, default=None, help="experts per MoE layer; 0 = dense model "
      "with no router (default: the preset's)")
    a("--top-k", type=int, default=None, choices=(1, 2), help="experts per token")
    a("--moe-layers", default=None, help="comma list of block indices that are MoE, e.g. "
      "2,3 (default: the last third of the layers)")
    a("--lb-coef", type=float, default=None, help="weight of the Switch load-balancing loss")
    a("--z-coef", type=float, default=None, help="weight of the router z-loss")
    a("--router-noise", type=float, default=None, help="initial std of the router logit "
      "noise, annealed linearly to 0 over the first 25%% of steps (model default 0.1)")
    a("--init-from", default=None, help="upcycle: initialise every expert from this dense "
      "checkpoint (GPT.from_pretrained_dense); ignored by --resume")
    a("--domain-weights", default=None, help="token share of each domain in training "
      "batches, e.g. code=1,math=1,prose=1 (default: equal shares; 0 leaves a domain out)")
    a("--stop-on-collapse", action="store_true", help=f"end the run after "
      f"{COLLAPSE_PATIENCE} evals in a row in which one expert takes more than "
      f"{COLLAPSE_SHARE * 100:.0f}%% of a MoE layer's eval tokens")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    ns = build_parser().parse_args(argv)
    d = vars(ns)
    if d["moe_layers"] is not None:
        try:
            d["moe_layers"] = [int(x) for x in d["moe_layers"].split(",") if x.strip()]
        except ValueError as e:
            raise TrainError(f"--moe-layers {ns.moe_layers!r}: give a comma list of layer "
                             "indices, e.g. 2,3") from e
    if d["experiment"]:
        for key, value in EXPERIMENTS[d["experiment"]].items():
            if d[key] is not None and d[key] != value:
                flag = "--" + key.replace("_", "-")
                raise TrainError(f"--experiment {d['experiment']} sets {flag} {value}; "
                                 f"drop {flag} {d[key]} or --experiment")
            d[key] = value
    cfg = TrainConfig(**d)
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.warmup < 0:
        raise TrainError("--warmup must be >= 0")
    if cfg.stop_after is not None and not 1 <= cfg.stop_after <= cfg.max_steps:
        raise TrainError(f"--stop-after must be in 1..--max-steps ({cfg.max_steps})")
    if cfg.resume and cfg.overwrite:
        raise TrainError("--resume and --overwrite exclude each other")
    return cfg


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to --lr, then cosine decay to lr * min_lr_ratio at --max-steps."""
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if step >= cfg.max_steps:
        return min_lr
    span = max(1, cfg.max_steps - cfg.warmup)
    ratio = (step - cfg.warmup) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - min_lr)


def router_noise_at(step: int, cfg: TrainConfig, initial: float) -> float:
    horizon = NOISE_ANNEAL_FRACTION * cfg.max_steps
    return initial * max(0.0, 1.0 - step / horizon) if horizon > 0 else 0.0


# --------------------------------------------------------------------------- logging


class Logger:
    """Rank 0's terminal (rich on a TTY, plain lines otherwise) and OUT/metrics.jsonl."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / METRICS_NAME
        self.out = Out()

    def record(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, allow_nan=True) + "\n")

    def line(self, text: str, style: str | None = None) -> None:
        if not self.enabled:
            return
        if self.out.console is not None:
            self.out.console.print(text, style=style, markup=False)
        else:
            print(text, flush=True)

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        if self.enabled:
            self.out.table(title, header, rows)
            self.out.file.flush()


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: Any, evalset: EvalSet, ctx: Any, world: int) -> dict[str, Any]:
    """Per-domain LM loss over every eval block, and per MoE layer routing statistics.

    Sums are all-reduced over ranks, so every rank returns the same numbers. Per layer:
    ``fractions[domain][e]`` = share of the domain's top-k assignments that went to expert e
    (each row sums to 1); ``load[e]`` = share of all eval tokens that have e among their top-k
    (sums to top_k; collapse = max load > 60%); ``imbalance`` = max / mean assignment count;
    ``entropy`` = mean entropy (nats) of the full router softmax per token.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    D = len(evalset.domains)
    layers = list(model.moe_layer_ids)
    L = len(layers)
    E = model.config.n_experts if L else 0
    k = model.config.top_k
    loss_sum = torch.zeros(D, dtype=torch.float64, device=dev)
    tokens = torch.zeros(D, dtype=torch.float64, device=dev)
    counts = torch.zeros(L, D, max(E, 1), dtype=torch.float64, device=dev)
    ent = torch.zeros(L, D, dtype=torch.float64, device=dev)
    for d in range(D):
        for x, y, n_valid in evalset.batches(d):
            with ctx:
                out = model(x, y, return_routing=L > 0)
            if not n_valid:
                continue
            n = y.numel()
            loss_sum[d] += out.lm_loss.double() * n
            tokens[d] += n
            for li in range(L):
                ids = out.routing[li].reshape(-1)
                counts[li, d] += torch.bincount(ids, minlength=E).double()
                p = out.router_probs[li].float()
                ent[li, d] += -(p * torch.log(p.clamp_min(1e-30))).sum(-1).sum().double()
    flat = torch.cat([loss_sum, tokens, counts.flatten(), ent.flatten()])
    if world > 1:
        dist.all_reduce(flat)
    flat = flat.cpu()
    loss_sum, tokens = flat[:D], flat[D:2 * D]
    counts = flat[2 * D:2 * D + L * D * max(E, 1)].view(L, D, max(E, 1))
    ent = flat[2 * D + L * D * max(E, 1):].view(L, D)
    domains = evalset.domains
    losses = {dom: (loss_sum[i] / tokens[i]).item() if tokens[i] > 0 else None
              for i, dom in enumerate(domains)}
    scored = [v for v in losses.values() if v is not None]
    res: dict[str, Any] = {
        "loss": losses,
        "loss_macro": sum(scored) / len(scored) if scored else None,
        "blocks": dict(zip(domains, evalset.total_blocks, strict=True)),
        "layers": [],
    }
    total = tokens.sum().item()
    for li, layer in enumerate(layers):
        c = counts[li]
        per_expert = c.sum(0)
        share = per_expert / max(total, 1.0)  # share of the layer's tokens sent to each expert
        mean = per_expert.mean().item()
        top = int(share.argmax())
        res["layers"].append({
            "layer": int(layer),
            "fractions": {dom: (c[i] / max(tokens[i].item() * k, 1.0)).tolist()
                          for i, dom in enumerate(domains)},
            "load": share.tolist(),
            "entropy": ent[li].sum().item() / max(total, 1.0),
            "entropy_by_domain": {dom: ent[li, i].item() / max(tokens[i].item(), 1.0)
                                  for i, dom in enumerate(domains)},
            "max_entropy": math.log(E),
            "imbalance": per_expert.max().item() / mean if mean > 0 else None,
            "top_expert": top,
            "top_share": share[top].item(),
            "collapsed": bool(share[top].item() > COLLAPSE_SHARE),
        })
    if was_training:
        model.train()
    return res


# --------------------------------------------------------------------------- the run


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup(cfg: TrainConfig) -> tuple[Dist, torch.device]:
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {cfg.device}: CUDA is not available here; use --device cpu")
    if not ddp:
        return Dist(), torch.device(want)
    d = Dist(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
             world=int(os.environ["WORLD_SIZE"]))
    if want.startswith("cuda"):
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group(backend="gloo")
    return d, device


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if d.world == 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        d, device = setup(cfg)
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return run(cfg, d, device)
    except (TrainError, DataError, CheckpointError, FormatError) as e:
        if d.master:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(cfg: TrainConfig, d: Dist, device: torch.device) -> int:
    from train.model import GPT, make_config  # the model module is only needed to train

    t_start = time.time()
    out = Path(cfg.out)
    ckpt_path = out / CKPT_NAME
    ds = shards.open(cfg.data)
    try:
        mcfg = make_config(cfg.preset, **cfg.overrides())
    except ValueError as e:  # unknown preset, bad n_experts/top_k/moe_layers, ...
        raise TrainError(f"model config: {e}") from e
    mcfg_dict = asdict(mcfg)
    weights = parse_domain_weights(cfg.domain_weights, ds.domains)

    ckpt = None
    if ckpt_path.exists() and not (cfg.resume or cfg.overwrite):
        raise TrainError(f"{out} holds a checkpoint ({CKPT_NAME}); pass --resume to continue "
                         "it or --overwrite to start over")
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        check_compatible(ckpt, ckpt_path, model_config=mcfg_dict,
                         data_fingerprint=ds.fingerprint, data_dir=str(cfg.data),
                         world_size=d.world)
    if d.world > 1:
        dist.barrier()
    if d.master:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            for name in (CKPT_NAME, METRICS_NAME):
                (out / name).unlink(missing_ok=True)
            for kept in out.glob("ckpt_*.pt"):  # --keep-ckpt-every copies of the old run
                kept.unlink()
        if ckpt is not None:
            _truncate_metrics(out / METRICS_NAME, int(ckpt["step"]))
    if d.world > 1:
        dist.barrier()
    log = Logger(out, d.master)

    # model, optimizer, sampler
    torch.manual_seed(cfg.seed)
    if cfg.init_from and ckpt is None:
        model = GPT.from_pretrained_dense(cfg.init_from, mcfg, seed=cfg.seed)
    else:
        model = GPT(mcfg)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2),
                                          device.type)
    sampler = TrainSampler(ds, block_size=mcfg.block_size, batch_size=cfg.batch_size,
                           weights=weights, seed=cfg.seed, rank=d.rank, device=device)
    step = 0
    loop_state: dict[str, int] = {}
    if ckpt is not None:
        loop_state = dict(ckpt.get("loop", {}))
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["sampler"]["ranks"][d.rank])
        set_rng_state(ckpt["rng"]["ranks"][d.rank])
        step = int(ckpt["step"])
        del ckpt
    else:
        torch.manual_seed(cfg.seed + 1 + d.rank)  # this rank's router-noise stream
    evalset = EvalSet(ds, block_size=mcfg.block_size,
                      batch_size=cfg.eval_batch_size or cfg.batch_size, rank=d.rank,
                      world_size=d.world, max_blocks=cfg.eval_max_blocks, device=device)

    raw = model
    if cfg.compile:
        # the padded-bmm MoE path reads its capacity with .item(): let dynamo trace it instead
        # of breaking the graph in every MoE layer
        torch._dynamo.config.capture_scalar_outputs = True
    train_model: Any = torch.compile(model) if cfg.compile else model
    if d.world > 1:
        # The MoE buffers (noise std, load counts) are kept equal on every rank by the loop
        # and the layer's own all-reduce: no need to re-broadcast them every forward.
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DDP).parameters
                          else {"broadcast_buffers": False})
        train_model = DDP(train_model, device_ids=[d.local_rank] if cuda else None,
                          **no_buffer_sync)
    bf16 = cuda and torch.cuda.is_bf16_supported()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    moe = len(raw.moe_layer_ids) > 0
    initial_noise = mcfg.router_noise_std
    T = mcfg.block_size
    tokens_per_step = cfg.batch_size * cfg.grad_accum * T * d.world
    peak = None
    if cuda:
        name = torch.cuda.get_device_name(device)
        peak = peak_flops(name)
        if peak is None:
            _warn(log, step, f"MFU omitted: no bf16 peak known for device {name!r} (add it to "
                  "PEAK_FLOPS in train/moe.py)")
    flops_tok = raw.flops_per_token(T, active=True)

    log.line(f"{'resumed at' if step else 'starting'} step {step}/{cfg.max_steps}: preset "
             f"{cfg.preset}, {'MoE ' + str(mcfg.n_experts) + 'x top-' + str(mcfg.top_k) if moe else 'dense'}, "
             f"{raw.num_params() / 1e6:.2f}M params ({raw.num_params(active=True) / 1e6:.2f}M "
             f"active), {tokens_per_step:,} tokens/step, {d.world} process(es) on {device}",
             style="bold")

    stop_reason = "max-steps"
    collapse_streak = int(loop_state.get("collapse_streak", 0))  # survives --resume
    n_warnings = int(loop_state.get("collapse_warnings", 0))
    last_train: dict[str, Any] = {}
    last_eval: dict[str, Any] | None = None
    exit_code = 0
    train_model.train()
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        noise = router_noise_at(step, cfg, initial_noise)
        raw.set_router_noise(noise)
        raw.reset_load_counts()
        sums = torch.zeros(3, device=device)
        for micro in range(cfg.grad_accum):
            batch = sampler.next_batch()
            sync = d.world == 1 or micro == cfg.grad_accum - 1
            with (nullcontext() if sync else train_model.no_sync()), ctx:
                o = train_model(batch.x, batch.y)
                loss = o.lm_loss + mcfg.lb_coef * o.lb_loss + mcfg.z_coef * o.z_loss
            (loss / cfg.grad_accum).backward()
            sums += torch.stack([o.lm_loss.detach().float(), o.lb_loss.detach().float(),
                                 o.z_loss.detach().float()])
        if d.world > 1:
            dist.all_reduce(sums)
        lm, lb, z = (sums / (cfg.grad_accum * d.world)).tolist()
        if not all(math.isfinite(v) for v in (lm, lb, z)):
            _warn(log, step + 1, f"non-finite loss at step {step + 1} (lm {lm}, lb {lb}, z {z}); "
                  f"stopping; the last good checkpoint in {ckpt_path} is kept")
            stop_reason = f"non-finite loss at step {step + 1}"
            exit_code = EXIT_NONFINITE
            optimizer.zero_grad(set_to_none=True)
            break
        norm = torch.nn.utils.clip_grad_norm_(raw.parameters(),
                                              cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        tps = tokens_per_step / dt
        mfu = flops_tok * tps / (peak * d.world) if peak else None
        last_train = {"kind": "train", "step": step, "lm_loss": lm, "lb_loss": lb, "z_loss": z,
                      "loss": lm + mcfg.lb_coef * lb + mcfg.z_coef * z, "lr": lr,
                      "router_noise": noise, "grad_norm": float(norm), "tokens_per_s": tps,
                      "tokens": step * tokens_per_step, "dt_s": dt, "mfu": mfu}
        log.record(last_train)
        aux = f" | lb {lb:.4f} | z {z:.4f} | noise {noise:.3f}" if moe else ""
        log.line(f"step {step}/{cfg.max_steps} | lm {lm:.4f}{aux} | lr {lr:.2e} | "
                 f"{tps:,.0f} tok/s" + (f" | mfu {mfu:.1%}" if mfu is not None else ""))

        stopping = cfg.stop_after is not None and step >= cfg.stop_after
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            last_eval = evaluate(raw, evalset, ctx, d.world)
            last_eval = {"kind": "eval", "step": step, **last_eval}
            log.record(last_eval)
            _print_eval(log, last_eval)
            collapsed = [lay for lay in last_eval["layers"] if lay["collapsed"]]
            for lay in collapsed:
                n_warnings += 1
                _warn(log, step, f"collapse: layer {lay['layer']} sends "
                      f"{lay['top_share']:.0%} of its eval tokens to expert "
                      f"{lay['top_expert']} (> {COLLAPSE_SHARE:.0%})",
                      layer=lay["layer"], expert=lay["top_expert"], share=lay["top_share"])
            collapse_streak = collapse_streak + 1 if collapsed else 0
            if cfg.stop_on_collapse and collapse_streak >= COLLAPSE_PATIENCE:
                stop_reason = (f"collapse: an expert took more than {COLLAPSE_SHARE:.0%} of a "
                               f"MoE layer's eval tokens at {collapse_streak} evals in a row "
                               f"(last: step {step}, "
                               + ", ".join(f"layer {lay['layer']} expert {lay['top_expert']} "
                                           f"{lay['top_share']:.0%}" for lay in collapsed) + ")")
                stopping = True
            _checkpoint(ckpt_path, raw, optimizer, sampler, step, cfg, mcfg_dict, ds, d,
                        {"collapse_streak": collapse_streak, "collapse_warnings": n_warnings})
            if d.master and cfg.keep_ckpt_every and step % cfg.keep_ckpt_every == 0:
                _keep_copy(ckpt_path, out / f"ckpt_{step:06d}.pt")
        elif stopping:
            _checkpoint(ckpt_path, raw, optimizer, sampler, step, cfg, mcfg_dict, ds, d,
                        {"collapse_streak": collapse_streak, "collapse_warnings": n_warnings})
        if stopping:
            if stop_reason == "max-steps":
                stop_reason = f"stop-after {cfg.stop_after}"
            break

    summary = {"kind": "summary", "step": step, "stop_reason": stop_reason,
               "exit_code": exit_code, "final_train": last_train or None,
               "final_eval_loss": last_eval["loss"] if last_eval else None,
               "final_eval_loss_macro": last_eval["loss_macro"] if last_eval else None,
               "collapse_warnings": n_warnings, "tokens": step * tokens_per_step,
               "params": raw.num_params(), "active_params": raw.num_params(active=True),
               "experiment": cfg.experiment, "world_size": d.world, "device": str(device),
               "wall_s": time.time() - t_start}
    log.record(summary)
    log.line(f"done at step {step}: {stop_reason}",
             style="bold red" if exit_code else "bold green")
    return exit_code


def _warn(log: Logger, step: int, message: str, **extra: Any) -> None:
    log.record({"kind": "warning", "step": step, "message": message, **extra})
    log.line(f"warning: {message}", style="yellow")


def _print_eval(log: Logger, ev: dict[str, Any]) -> None:
    rows = [[dom, f"{v:.4f}" if v is not None else "-", str(ev["blocks"][dom])]
            for dom, v in ev["loss"].items()]
    macro = ev["loss_macro"]
    rows.append(["macro", f"{macro:.4f}" if macro is not None else "-", ""])
    log.table(f"eval at step {ev['step']}", ["domain", "lm loss", "blocks"], rows)
    for lay in ev["layers"]:
        E = len(lay["load"])
        rows = [[dom, *(f"{100 * v:.1f}" for v in fr)] for dom, fr in lay["fractions"].items()]
        rows.append(["load", *(f"{100 * v:.1f}" for v in lay["load"])])
        imb = lay["imbalance"]
        imb_s = f"{imb:.2f}" if imb is not None else "-"
        log.table(f"layer {lay['layer']}: routing % (domain x expert), entropy "
                  f"{lay['entropy']:.3f}/{lay['max_entropy']:.3f} nats, imbalance {imb_s}",
                  ["domain", *(f"e{i}" for i in range(E))], rows)


def _checkpoint(path: Path, raw: Any, optimizer: Any, sampler: TrainSampler, step: int,
                cfg: TrainConfig, mcfg_dict: dict[str, Any], ds: Any, d: Dist,
                loop: dict[str, int]) -> None:
    samplers = gather(sampler.state_dict(), d)
    rngs = gather(rng_state(), d)
    if d.master:
        save_checkpoint(path, {
            "model": raw.state_dict(),
            "model_config": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in mcfg_dict.items()},
            "train_config": asdict(cfg),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "sampler": {"world_size": d.world, "ranks": samplers},
            "rng": {"world_size": d.world, "ranks": rngs},
            "data_fingerprint": ds.fingerprint,
            "data_dir": str(cfg.data),
            "loop": loop,
        })
    if d.world > 1:
        dist.barrier()


def _keep_copy(src: Path, dest: Path) -> None:
    """Copy a finished checkpoint atomically (temp file + rename)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume: drop the records after the checkpoint's step (and old summaries)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") != "summary" and int(rec.get("step", 0)) <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
