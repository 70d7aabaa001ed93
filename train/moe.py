"""Train a small GPT-2 mixture-of-experts (or its dense baseline) on a shards dataset.

    python train/moe.py --data shards_out --out runs/tiny --preset tiny --experiment moe-top1
    torchrun --standalone --nproc_per_node 2 train/moe.py --data shards_out --out runs/ddp ...

The entry point only: options in train/config.py, what comes before step 0 in train/start.py,
the loop in train/loop.py (its device-side step numbers in train/step_stats.py), evaluation in
train/evaluation.py, processes in train/distributed.py, metrics.jsonl in train/metrics.py,
checkpoints in train/checkpoint.py, the run directory in train/run_dir.py (its lock in
train/lock.py), SIGTERM in train/preempt.py. Exit codes: 0 done (or --stop-after), 2 refused (bad options, data, run
directory or checkpoint), 3 non-finite loss, 143 stopped by SIGTERM with a checkpoint written.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script: make `shards` and `train` importable
    sys.path.insert(0, str(_ROOT))

from shards.format import FormatError  # noqa: E402
from train.checkpoint import CheckpointError  # noqa: E402
from train.config import TrainError, parse_args  # noqa: E402
from train.data import DataError  # noqa: E402
from train.distributed import DistError, setup, teardown  # noqa: E402
from train.start import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        d, device = setup(cfg.device)
    except (TrainError, DistError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return run(cfg, d, device)
    except (TrainError, DataError, CheckpointError, FormatError) as e:
        if d.master:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        teardown()


if __name__ == "__main__":
    sys.exit(main())
