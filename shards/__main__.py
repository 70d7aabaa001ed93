"""`python -m shards {inspect,verify,sample,audit,export} DIR`: the tools for a dataset."""

from __future__ import annotations

import argparse
import sys

from shards import audit, export, inspect_cmd, sample, verify
from shards.format import FormatError
from shards.reader import SplitNotFoundError

COMMANDS = {
    "inspect": (inspect_cmd, "show the dataset's config, per-split counts and shard list"),
    "verify": (verify, "re-hash every file and check tokens, document index and leakage; "
                       "exit 1 on any problem"),
    "sample": (sample, "print random whole documents of a domain, decoded, with provenance"),
    "audit": (audit, "contamination, source diversity and format artifacts per domain"),
    "export": (export, "write the dataset for another trainer: nanoGPT's train.bin/val.bin (domains "
                       "mixed by weight), llm.c token files or a Megatron-LM indexed dataset, "
                       "with an export.json of checksums"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shards",
        description="Open, check and question a dataset written by `python -m prep`.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = COMMANDS[args.command][0]
    try:
        return module.run(args)
    except (FormatError, SplitNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
