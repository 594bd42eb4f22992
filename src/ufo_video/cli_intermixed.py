"""Commands whose ``key=value`` overrides may be split by options: ``train CONFIG --threads 1 lr=2e-4``.

Plain argparse binds an optional positional list (``nargs="*"``) at the first positional word and
then rejects any later one as "unrecognized arguments", so ``train CONFIG --threads 1 key=value``
failed while ``train CONFIG key=value --threads 1`` worked. ``parse_known_intermixed_args``
collects the positionals wherever they stand; every command that takes ``key=value`` overrides
(``train``, ``generate``, ``sweep``, the ``data`` actions) parses that way.
"""

from __future__ import annotations

import argparse


class IntermixedParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose positionals may come before, between and after its options."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inside:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def intermixed(parser: argparse.ArgumentParser) -> IntermixedParser:
    """Make a parser made by ``subparsers.add_parser`` intermixed (the top-level subparsers make
    plain parsers, and a command with its own subcommands cannot be intermixed itself)."""
    parser.__class__ = IntermixedParser
    return parser  # type: ignore[return-value]
