"""``prolific-ingest``: the command-line front end (stdlib argparse, no logic of its own).

The package is cut by job: ``_parser`` (commands, options, usage rules), ``_load`` (``batch``,
``collection``), ``_read`` (``read``, ``demo``, ``emulator``), ``_housekeeping`` (``exports``,
``cache``, ``lake``), ``_output`` (text and ``--json``) and ``_exit`` (errors -> exit codes and
messages in command-line terms; docs/cli.md lists the codes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._exit import run
from ._parser import build_parser, check_usage

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prolific-ingest`` console script.

    Parameters
    ----------
    argv
        The arguments after the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        The exit code (docs/cli.md lists them).
    """
    args = build_parser().parse_args(argv)
    check_usage(args)
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # urllib3 logs whole request lines: a presigned URL's query string is a credential.
        logging.getLogger("urllib3").setLevel(logging.WARNING)
    return run(lambda: args.func(args), debug=args.debug)
