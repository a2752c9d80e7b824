"""The ``cosearch`` command: a thin layer over the Python API.

Each sub-command lives in ``cosearch/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser with ``set_defaults(func=run)``.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from .errors import UserError


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 already; keep its message to one line.
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cosearch", description="Mixed-precision mixture-of-supernets and "
                "FPGA/ASIC co-search for transformers.")
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
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"cosearch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cosearch {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
