"""The `jaxmoe` command.

    jaxmoe simulate [--d 1000 --m 25 --m-star 5 --seeds 4 ...]

One module per command (`simulate`, `sweep`, `compare`, `scaling`, `prune`,
`slim`, `rates`, `stuck`, `phase`), each with ``add_parser(subparsers)`` and ``run(args)``; the flags
they share, one per `SimulationConfig` field, are in `_flags`.

The error policy: bad input ends with one line on stderr and exit code 2,
no traceback; any other exception is a bug and shows its traceback (exit
code 1). The command opts into float64 (unless `--float32`): the library
itself never changes JAX's global configuration.
"""

from __future__ import annotations

import sys

from . import compare, phase, prune, rates, scaling, simulate, slim, stuck, sweep
from ._flags import Parser, UsageError

__all__ = ["COMMANDS", "UsageError", "main", "parser"]

COMMANDS = {"simulate": simulate, "sweep": sweep, "compare": compare, "scaling": scaling, "prune": prune, "slim": slim,
            "rates": rates, "phase": phase, "stuck": stuck}


def parser() -> Parser:
    """The whole command line: ``jaxmoe [--version] COMMAND ...``."""
    top = Parser(prog="jaxmoe", description="Exact simulation of soft-routed mixture-of-experts learning dynamics.")
    top.add_argument("--version", action="store_true", help="print the version and exit")
    sub = top.add_subparsers(dest="command", parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxmoe`` with `argv` (default: the process's arguments); return the exit code."""
    try:
        args = parser().parse_args(argv)
        if args.version:
            from .. import __version__

            print(f"jaxmoe {__version__}")
            return 0
        if args.command is None:
            raise UsageError(f"a command is required: {', '.join(COMMANDS)} (see 'jaxmoe --help')")
        return COMMANDS[args.command].run(args)
    except UsageError as err:
        print(f"jaxmoe: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxmoe: interrupted; files already written are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
