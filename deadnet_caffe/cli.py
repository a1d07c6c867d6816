"""deadnet: reproduce, retrain and probe the DeadNet phototoxicity classifiers in Caffe."""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

from data_prep.core.errors import UserError
from deadnet_caffe import __version__, commands


def _summaries() -> dict[str, tuple[str, str, str]]:
    """``{NAME: (module, HELP, docstring)}`` of every command, read without importing them.

    Command modules import pycaffe, OpenCV and friends; reading their NAME and HELP from the
    source keeps ``deadnet --help`` and each subcommand's start-up fast.
    """
    out = {}
    for info in pkgutil.iter_modules(commands.__path__):
        path = Path(commands.__path__[0]) / f"{info.name}.py"
        tree = ast.parse(path.read_text())
        consts = {
            t.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for t in node.targets
            if isinstance(t, ast.Name) and t.id in ("NAME", "HELP")
        }
        if "NAME" in consts:
            out[consts["NAME"]] = (info.name, consts.get("HELP", ""), ast.get_docstring(tree))
    return dict(sorted(out.items()))


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), like every
    other bad input: ``deadnet train: argument --batch: 0 is not a positive integer (see
    deadnet train --help).``; argparse's default prints the whole usage first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help).\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``deadnet`` parser; with ``only``, that subcommand's arguments are loaded in full."""
    parser = _Parser(
        prog="deadnet",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deadnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_, doc) in _summaries().items():
        p = sub.add_parser(
            name, help=help_, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        if name == only:
            module = importlib.import_module(f"{commands.__name__}.{module_name}")
            p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:  # a Ctrl-C while the command's modules are imported is no traceback either
        parser = build_parser(only=chosen)
    except KeyboardInterrupt:
        print(f"deadnet {chosen}: interrupted.", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"deadnet {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deadnet {args.command}: interrupted.", file=sys.stderr)
        return 130
