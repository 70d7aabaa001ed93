"""`python -m prep`: build GPT-2 token shards and a manifest from a recipe."""

from __future__ import annotations

import argparse
import os
import sys

# prep never needs torch; without this, `datasets` imports it (1-2 s and ~200 MB per run) to
# check for DataLoader workers when a streaming dataset is created.
os.environ.setdefault("USE_TORCH", "0")

from prep.pipeline import PrepConfig, PrepError, run
from prep.progress import make_reporter
from prep.recipe import RecipeError, builtin_recipes
from prep.sources import SourceError
from shards.format import FormatError
from shards.tokenizer import TokenizerError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prep",
        description="Stream text sources into memory-mapped uint16 GPT-2 token shards, split "
                    "train/eval by a hash of each document's content, and write a manifest "
                    "(OUT/manifest.json, written last).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--recipe", default="sample",
                   help=f"built-in recipe name ({', '.join(builtin_recipes())}) or a TOML file")
    p.add_argument("--out", default="shards_out", help="output directory")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="tokenizer worker processes (output is identical for any number)")
    p.add_argument("--size-mb", type=float, default=None,
                   help="per-domain budget in MB (1e6 bytes) of UTF-8 formatted text; overrides "
                        "the recipe (whose default is 10)")
    p.add_argument("--size-tokens", type=int, default=None,
                   help="per-domain budget in tokens (EOT included); with --size-mb, whichever "
                        "is reached first ends the domain")
    p.add_argument("--block-size", type=int, default=None,
                   help="block size for the manifest's block counts (default: the recipe's, 512)")
    p.add_argument("--seed", type=int, default=None,
                   help="shuffle seed (default: the recipe's); never changes the train/eval split")
    p.add_argument("--eval-fraction", type=float, default=None,
                   help="share of documents whose content hash sends them to eval "
                        "(default: the recipe's, else 0.05)")
    p.add_argument("--min-eval-docs", type=int, default=20,
                   help="fail if a domain ends with fewer eval documents than this")
    p.add_argument("--shuffle-buffer", type=int, default=None,
                   help="shuffle buffer size in documents (default: max(1000, size_mb * 200))")
    p.add_argument("--shard-tokens", type=int, default=1 << 27,
                   help="tokens per shard file (a multiple of the block size)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished dataset in --out (refused otherwise)")
    p.add_argument("--tokenizer-file", default=None,
                   help="GPT-2 BPE ranks in tiktoken format (default: the copy shipped in shards/)")
    p.add_argument("--max-bad-fraction", type=float, default=0.001,
                   help="skip and count unreadable records up to this share of a domain; above "
                        "it the run fails")
    p.add_argument("--cache-dir", default=None,
                   help="where downloaded files (the MathQA ZIP) are kept (default: a temp dir)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = PrepConfig(**{k: v for k, v in vars(args).items() if k != "quiet"})
    reporter = make_reporter(args.quiet)
    try:
        manifest = run(cfg, reporter)
    except KeyboardInterrupt:
        reporter.close()
        print("prep: interrupted; nothing was published (no manifest written)", file=sys.stderr)
        return 130
    except (PrepError, SourceError, RecipeError, FormatError, TokenizerError) as e:
        reporter.close()
        print(f"prep: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        reporter.close()
        print(f"prep: error: {e} (nothing was published)", file=sys.stderr)
        return 1
    reporter.summary(manifest, cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
