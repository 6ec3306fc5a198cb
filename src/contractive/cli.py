"""The ``contractive`` command line: a small dispatcher over command modules.

Each command module has ``register(subparsers)`` and ``run(args) -> int``. Library errors
(``ValueError``, ``TypeError``) are caught here, at the edge, and printed as one line with
exit code 2; so are argparse's own errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``contractive train: error: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .commands import analyze, datasets, encode, evaluate, finetune, reproduce, train

    parser = _Parser(
        prog="contractive",
        description="Contractive auto-encoders: train, evaluate, encode and reconstruct.",
        epilog="example: contractive train digits --out runs/d && contractive evaluate runs/d",
    )
    parser.add_argument("--version", action="version", version=f"contractive {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in (train, evaluate, analyze, finetune, encode, datasets, reproduce):
        command.register(sub)
    parser.commands = sub.choices  # name -> the command's parser
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, which names the command and its --help
        command = parser.commands.get(args.command, parser) if args.command else parser
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except (ValueError, TypeError) as exc:
        print(f"contractive {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be written or read
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"contractive {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # NonFiniteLossError: a run, not an input, failed
        print(f"contractive {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        from .training import memory_error_line, out_of_memory

        if not out_of_memory(exc):
            raise  # a bug: the traceback says where
        first = memory_error_line(exc)
        advice = "" if "--resume" in first else (  # a run that says how to resume its own
            "; use smaller layers, batches or data, or another --device")
        print(f"contractive {args.command}: error: out of memory ({first}){advice}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"contractive {args.command}: interrupted", file=sys.stderr)
        return 130
