"""The ``cosearch`` command: a thin layer over the Python API.

Each sub-command lives in ``cosearch/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser with ``set_defaults(func=run)``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from . import commands
from .atomic import write_error_message, write_refusal_in
from .errors import UserError
from .threads import configure_cpu_threads


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 already; keep its message to one line.
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cosearch", description="Mixed-precision weight-sharing supernets (optionally "
                "mixture-of-supernets) and FPGA/ASIC co-search for transformers.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for m in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{m.name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_cpu_threads()  # before any command imports torch
    if hasattr(signal, "SIGXFSZ"):
        # Past a file-size limit (ulimit -f) a write then fails with EFBIG, which is
        # reported like a full disk, instead of the signal killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"cosearch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # stdout closed early (`cosearch cost ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"cosearch {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        refused = write_refusal_in(e)
        if refused is None:
            raise
        # A read-only or full disk is the machine, not a bug: one line, like a UserError,
        # naming the file, else the output folder of the command.
        where = None if refused.filename else getattr(args, "out", None)
        print(f"cosearch {args.command}: error: {write_error_message(where, refused)}", file=sys.stderr)
        return 2
    return int(rc or 0)


def run() -> None:
    """The console entry point: the command, then the interpreter's exit."""
    try:
        rc = main()
    except KeyboardInterrupt:  # outside the command's own handler: at start-up, or just after it returned
        rc = 130
    # The command is done. A Ctrl-C while the interpreter runs its exit hooks (torch's among
    # them) would print a traceback from a hook and still exit 0; with the default action it
    # ends the process at once, quietly. (A process started with Ctrl-C ignored keeps it so.)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(rc)


if __name__ == "__main__":
    run()
