"""The ``xmine`` command line: parse arguments, make one API call, print a summary.

Every :class:`~xmine.errors.XmineError` (and a file the user named that cannot
be read) ends the command with one line on stderr and exit status 1; usage
mistakes exit with 2 (argparse). ``--debug`` re-raises, to show the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from xmine import __version__
from xmine.cli._printer import Printer
from xmine.errors import XmineError

__all__ = ["main"]

log = logging.getLogger("xmine")

_Handler = Callable[[argparse.Namespace], int]


#: Modules that add verbs (each defines ``add_commands(sub)``), in the order of ``xmine --help``.
COMMAND_MODULES: tuple[str, ...] = ("xmine.cli.pipeline", "xmine.cli.run", "xmine.cli.study", "xmine.cli.catalog",
                                     "xmine.cli.sources", "xmine.cli.catalog_tools")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmine", description="Catalogue-driven data mining of X-ray observations (Chandra, CSC 2.1, 4XMM)."
    )
    parser.add_argument("--version", action="version", version=f"xmine {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="project file (default ./xmine.toml if present)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level of the library (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xmine`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 1 error, 2 usage error, 130 interrupted.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(args.log_level)
    args.printer = Printer(quiet=args.quiet)
    try:
        return int(args.func(args))
    except XmineError as exc:
        if args.debug:
            raise
        print(f"xmine: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the user gave that cannot be read or written
        if args.debug:
            raise
        name = f"{exc.filename}: " if exc.filename else ""
        print(f"xmine: error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmine: interrupted; finished steps are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
