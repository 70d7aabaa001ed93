"""The run directory (--out): what a start may find there, and what it cleans up.

- A fresh run into a directory that holds metrics.jsonl or a checkpoint (ckpt.pt, ckpt_*.pt)
  is refused: ``--resume`` continues it, ``--overwrite`` deletes them and starts over.
- ``--resume`` needs ckpt.pt, and refuses options that alter the run and differ from the
  checkpoint's unless ``--allow-change`` names them (train/config.py ``run_changes``).
- A run killed before its first checkpoint (metrics.jsonl, no ckpt.pt) has nothing to resume:
  a plain start and ``--resume`` both point to ``--overwrite``.
- Every start, a refused one too, removes the temporary files a killed writer left
  (``.<name>.tmp-<pid>`` of shards.atomic whose process is gone); a resume drops the metrics
  records after the checkpoint's step.
- The run that writes holds OUT/.train.lock (train/lock.py) from :func:`prepare` to its exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shards.atomic import remove_stale_temps
from train.checkpoint import CKPT_NAME
from train.config import TrainConfig, TrainError, run_changes
from train.metrics import METRICS_NAME, truncate_metrics

KEPT_GLOB = "ckpt_*.pt"  # --keep-ckpt-every copies


def previous_run(out: Path) -> list[str]:
    """The files of an earlier run in `out` (metrics, checkpoints)."""
    names = [n for n in (METRICS_NAME, CKPT_NAME) if (out / n).exists()]
    return names + sorted(p.name for p in out.glob(KEPT_GLOB))


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _cleaned(out: Path) -> str:
    """Remove the temporary files of killed writers in `out` (a refused start too: they are
    garbage whatever this run does); the words a refusal adds about them."""
    stale = remove_stale_temps(out) if out.is_dir() else []
    return (f" (removed {len(stale)} temporary file(s) a killed run left: "
            f"{_shown([p.name for p in stale])})" if stale else "")


def check_start(out: Path, cfg: TrainConfig) -> None:
    """Refuse (TrainError) a start that would mix two runs in `out`, or resume nothing.

    A run killed before its first checkpoint leaves metrics.jsonl and no ckpt.pt: it has
    nothing to resume, so both a plain start and --resume point to --overwrite."""
    found = previous_run(out) if out.is_dir() else []
    kept = [n for n in found if n != METRICS_NAME and n != CKPT_NAME]
    if cfg.resume:
        if (out / CKPT_NAME).is_file():
            return
        if not found:
            raise TrainError(f"--resume: {out / CKPT_NAME} does not exist; nothing to resume "
                             "(drop --resume to start a run)" + _cleaned(out))
        restore = (f", copy one of {_shown(kept)} to {CKPT_NAME} to resume from it" if kept
                   else "")
        raise TrainError(f"--resume: {out / CKPT_NAME} does not exist: the earlier run in {out} "
                         f"stopped before it wrote one ({_shown(found)}), so there is nothing to "
                         f"resume; start over with --overwrite instead of --resume{restore}, or "
                         "choose another --out" + _cleaned(out))
    if not found or cfg.overwrite:
        return
    if CKPT_NAME in found:
        raise TrainError(f"{out} holds an earlier run ({_shown(found)}); pass --resume to "
                         "continue it or --overwrite to delete it and start over, or choose "
                         "another --out" + _cleaned(out))
    if kept:
        raise TrainError(f"{out} holds an earlier run ({_shown(found)}) without {CKPT_NAME}: "
                         "pass --overwrite to delete it and start over, copy one of "
                         f"{_shown(kept)} to {CKPT_NAME} and pass --resume to continue from it, "
                         "or choose another --out" + _cleaned(out))
    raise TrainError(f"{out} holds an earlier run that wrote no checkpoint ({_shown(found)}): "
                     "there is nothing to resume; pass --overwrite to delete it and start over, "
                     "or choose another --out" + _cleaned(out))


def changes_to_accept(saved: dict[str, Any], cfg: TrainConfig, path: Path,
                      data: tuple[str, str] | None = None) -> dict[str, Any]:
    """The options that differ from the checkpoint's (and `data`: the datasets, when their
    fingerprints differ): returned when --allow-change names each of them (key -> [saved,
    now]), refused with the whole list otherwise."""
    changes: dict[str, Any] = dict(run_changes(saved, cfg))
    if data is not None:
        changes["data"] = data
    refused = [k for k in changes if k not in cfg.allow_change]
    if refused:
        listed = "; ".join(f"{k}: {changes[k][0]!r} in the checkpoint, {changes[k][1]!r} now"
                           for k in changes)
        raise TrainError(f"--resume: {path} was trained with other options ({listed}). Resume "
                         "with the original options, accept the changes with --allow-change "
                         f"{' '.join(refused)}, or train into a new --out.")
    return {k: list(v) for k, v in changes.items()}


def prepare(out: Path, cfg: TrainConfig, resume_step: int | None) -> list[Path]:
    """Rank 0, after the checks: create `out`, remove stale temporary files, and clear the old
    run (--overwrite) or its records past the checkpoint (--resume). Returns the removed
    temporary files."""
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temps(out)
    if cfg.overwrite:
        for name in (CKPT_NAME, METRICS_NAME):
            (out / name).unlink(missing_ok=True)
        for kept in out.glob(KEPT_GLOB):
            kept.unlink()
    if resume_step is not None:
        truncate_metrics(out / METRICS_NAME, resume_step)
    return stale
