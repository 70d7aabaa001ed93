"""`python -m prep`: build GPT-2 token shards and a manifest from a recipe (see prep.config)."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

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


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted("SIGTERM")


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


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(argv)
    reporter = make_reporter(cfg.quiet)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)  # handled like Ctrl-C
    outcome = Outcome()
    try:
        manifest = run(cfg, reporter, outcome)
    except (KeyboardInterrupt, Interrupted) as e:
        reporter.close()
        what = "terminated (SIGTERM)" if isinstance(e, Interrupted) else "interrupted"
        print(f"prep: {what}; {_what_happened(outcome)}", file=sys.stderr)
        return 143 if isinstance(e, Interrupted) else 130
    except EXPECTED as e:
        reporter.close()
        print(f"prep: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        reporter.close()
        print(f"prep: error: {e} ({_what_happened(outcome)})", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if manifest is not None:
        reporter.summary(manifest, cfg.out)
    else:
        reporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
