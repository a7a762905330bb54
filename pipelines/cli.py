"""``amnesia``: the command line, a thin layer over the stages' Python APIs.

Each subcommand lives in ``pipelines/commands/<name>.py`` and defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Errors a user can fix are raised as
:class:`tracing.errors.AmnesiaError` and printed here as one line with exit status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from tracing.errors import AmnesiaError

# One module per subcommand, in the order `amnesia --help` lists them.
COMMANDS = (
    "pipelines.commands.make_world",
    "pipelines.commands.make_target",
    "pipelines.commands.trace",
    "pipelines.commands.unlearn",
    "pipelines.commands.evaluate",
    "pipelines.tofu.command",  # a benchmark's own command lives in its package
    "pipelines.muse.command",
    "pipelines.commands.compare",
    "pipelines.commands.audit",
    "pipelines.commands.run",
    "pipelines.commands.demo",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every option's default once and keep the description's line breaks.

    ``(default: X)`` is appended unless the help text already explains its default, the option
    is required, its default is None (the text says what happens without it) or it is an on/off
    flag (``store_true`` options are off unless given).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if "default" in text.lower() or action.required or action.default is None or flag:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line errors and exit status 2, like our own errors."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="amnesia",
        description="Targeted unlearning in LLMs guided by causal tracing: trace → unlearn → score.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__, formatter_class=HelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks instead of one-line errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `amnesia run CONFIG --quiet unlearn.lr=1e-5`: argparse stops a positional list at the first
    # flag, so key=value overrides after a flag come back unparsed; they are overrides all the same
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except AmnesiaError as exc:
        if args.debug or os.environ.get("AMNESIA_DEBUG"):
            raise
        print(f"amnesia {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amnesia {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
