"""`python -m prep`: build GPT-2 token shards and a manifest from a recipe (see prep.config).

SIGTERM is handled for the whole life of the process, like Ctrl-C: its handler is installed
before anything else is imported (the imports take ~0.2 s), and stays until the process exits.
During the run it stops the run (exit 143, a line saying what was kept); before the run or after
it (printing the summary, exiting) it says what had happened by then and exits 143 at once.
Only the interpreter's own start, before this file runs, is not covered.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any


class Termination:
    """The SIGTERM handler of `python -m prep`: raises prep.run.Interrupted while a run is in
    progress (`running`), else prints what happened (`outcome`) and exits 143."""

    def __init__(self) -> None:
        self.running = False
        self.outcome: Any = None  # the run's prep.run.Outcome, once there is one

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.running:
            from prep.run import Interrupted  # imported by then

            raise Interrupted("SIGTERM")
        what = ("while starting; nothing was done" if self.outcome is None
                else f"while exiting; {_what_happened(self.outcome)}")
        sys.stdout.flush()
        print(f"prep: terminated (SIGTERM) {what}", file=sys.stderr, flush=True)
        os._exit(143)


if __name__ == "__main__":  # at the earliest point: before the imports below
    _TERMINATION = Termination()
    signal.signal(signal.SIGTERM, _TERMINATION)

from prep import faults  # noqa: E402 (light: os and signal)

faults.maybe_kill("start")

# prep never needs torch; without this, `datasets` imports it (1-2 s and ~200 MB per run) to
# check for DataLoader workers when a streaming dataset is created.
os.environ.setdefault("USE_TORCH", "0")

from prep.commit import CommitError  # noqa: E402
from prep.config import config_from_args  # noqa: E402
from prep.executors import ExecutorError  # noqa: E402
from prep.progress import make_reporter  # noqa: E402
from prep.publish import PublishError  # noqa: E402
from prep.readers import SourceError  # noqa: E402
from prep.recipe import RecipeError  # noqa: E402
from prep.run import Interrupted, Outcome, PrepError, run  # noqa: E402
from prep.task import TaskError  # noqa: E402
from prep.workdir import RunStateError  # noqa: E402
from shards.format import FormatError  # noqa: E402
from shards.tokenizer import TokenizerError  # noqa: E402

EXPECTED = (PrepError, SourceError, RecipeError, FormatError, TokenizerError, RunStateError,
            TaskError, CommitError, ExecutorError, PublishError)


def _what_happened(outcome: Outcome) -> str:
    if outcome.published:
        return f"the new dataset was published ({outcome.published})"
    if outcome.work and outcome.slice_run:
        return (f"this slice's finished tasks are kept in {outcome.work}: run the slice again "
                "(same options) to finish it")
    if outcome.work:
        return (f"nothing was published; finished tasks are kept in {outcome.work}: re-run the "
                "same command with --resume to continue")
    return "nothing was published"


def main(argv: list[str] | None = None, termination: Termination | None = None) -> int:
    """Run prep; `termination` is the SIGTERM handler `python -m prep` installed at its start
    (called in-process, main installs one for the call and restores the previous after)."""
    cfg = config_from_args(argv)
    reporter = make_reporter(cfg.quiet)
    outcome = Outcome()
    own = termination is None
    term = Termination() if termination is None else termination
    previous = signal.signal(signal.SIGTERM, term) if own else None
    term.outcome, term.running = outcome, True
    try:
        manifest = run(cfg, reporter, outcome)
        if manifest is not None:
            reporter.summary(manifest, cfg.out)
        else:
            reporter.close()
    except (KeyboardInterrupt, Interrupted) as e:
        term.running = False
        reporter.close()
        what = "terminated (SIGTERM)" if isinstance(e, Interrupted) else "interrupted"
        print(f"prep: {what}; {_what_happened(outcome)}", file=sys.stderr)
        return 143 if isinstance(e, Interrupted) else 130
    except EXPECTED as e:
        term.running = False
        reporter.close()
        print(f"prep: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        term.running = False
        reporter.close()
        print(f"prep: error: {e} ({_what_happened(outcome)})", file=sys.stderr)
        return 1
    finally:
        term.running = False  # from here, SIGTERM says what happened and exits 143 at once
        if own:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    faults.maybe_kill("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main(termination=_TERMINATION))
