"""The command-line convention of every entry point: absl flags, one `Command` per program.

Training takes `--config=configs/X.py --config.key=value` (ml_collections' `config_flags`, which
needs absl), so every other entry point uses absl flags too, the way the flax examples and
big_vision do. A command defines its flags on a `flags.FlagValues` of its own, made afresh by
each `Command.parse`, never on absl's global `FLAGS`: `main(argv)` can be called again and
again (the tests do), and importing one command defines nothing another could clash with.

    def _define_flags(fv: flags.FlagValues) -> None:
        flags.DEFINE_string("out", None, "metrics JSON", flag_values=fv, required=True)
        flags.DEFINE_bool("tta", False, "also report flip TTA", flag_values=fv)

    COMMAND = command_line.Command("python -m hanet_jax.x", __doc__, _define_flags,
                                   positional=("ROOT",))

    def main(argv: list[str] | None = None) -> int:
        args = COMMAND.parse(argv)  # args.out, args.tta, args.root
        ...

    def run() -> None:  # the console script
        sys.exit(main())

The syntax is absl's: `--name=value` or `--name value`; a boolean as bare `--name` (and
`--noname`); a list as `--name=a,b`. Flags and positional arguments may be interleaved; `--`
ends the flags. `--help` (or `-h`) prints the command's docstring, its usage and its flags,
and exits with status 0. A command line that cannot run (an unknown flag, a missing required
one, a value of the wrong type or outside an enum, a wrong number of positional arguments)
prints one line naming the problem and the usage to stderr and raises `UsageError`: a
`SystemExit` with status 2, as argparse did, so a console script exits with 2 and a caller of
`main` can catch it.

This module imports only absl and the standard library: it is the package's lowest layer.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from absl import flags

HELP_ARGS = ("--help", "-help", "-h", "--helpshort", "--helpfull")
USAGE_ERROR_STATUS = 2

flags.disclaim_key_flags()  # the flags DEFINE_integer_list defines belong to its caller


class UsageError(SystemExit):
    """A command line that cannot run; the message is already on stderr. Exit status 2."""

    def __init__(self, message: str):
        super().__init__(USAGE_ERROR_STATUS)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _IntegerListParser(flags.ListParser):
    """Comma-separated integers: `--image_size=256,320` -> [256, 320]."""

    def __init__(self):
        super().__init__()
        self.syntactic_help = "a comma-separated list of integers"

    def parse(self, argument):
        values = super().parse(argument)
        try:
            return [int(v) for v in values]
        except (TypeError, ValueError) as e:
            raise ValueError(f"expected comma-separated integers, got {argument!r}") from e


def DEFINE_integer_list(name: str, default: Sequence[int] | None, help: str,  # noqa: N802,A002
                        flag_values: flags.FlagValues, **kwargs) -> flags.FlagHolder:
    """A list-of-integers flag (`--name=1,2`); absl has lists of strings only."""
    return flags.DEFINE(_IntegerListParser(), name, default, help, flag_values,
                        serializer=flags.CsvListSerializer(","), **kwargs)


def argv_or_sys(argv: Sequence[str] | None) -> list[str]:
    """`argv` as a list, or the process's arguments (without the program name) when None."""
    return list(sys.argv[1:] if argv is None else argv)


def _before_double_dash(argv: list[str]) -> list[str]:
    return argv[:argv.index("--")] if "--" in argv else argv


@dataclasses.dataclass(frozen=True)
class Command:
    """One program's command line.

    prog: how it is run, for the usage line ("python -m hanet_jax.data.check", "python eval.py").
    doc: what --help prints first (usually the module docstring).
    define_flags: defines the command's flags on the FlagValues it is given.
    positional: names of the positional arguments, in order ("ROOT"); a last name ending in
      "..." takes one or more ("MEMBERS..."). In the parsed namespace each is lower-cased,
      without the dots ("root", "members": a list).
    subcommands: when given, the first argument names one of them, which parses the rest;
      the namespace then has `command` set to that name.
    synopsis: the flags part of the usage line ("--out=JSON [--flag=value ...]").
    """

    prog: str
    doc: str = ""
    define_flags: Callable[[flags.FlagValues], object] | None = None
    positional: tuple[str, ...] = ()
    subcommands: Mapping[str, Command] = dataclasses.field(default_factory=dict)
    synopsis: str = "[--flag=value ...]"

    @property
    def usage(self) -> str:
        if self.subcommands:
            return f"{self.prog} {{{'|'.join(self.subcommands)}}} ..."
        words = [self.prog, *self.positional]
        if self.define_flags is not None:
            words.append(self.synopsis)
        return " ".join(words)

    def flag_values(self) -> flags.FlagValues:
        """A new FlagValues holding this command's flags, unparsed."""
        fv = flags.FlagValues()
        if self.define_flags is not None:
            self.define_flags(fv)
        return fv

    def help_text(self) -> str:
        parts = [self.doc.strip(), f"usage: {self.usage}"]
        if self.subcommands:
            parts.append("\n".join(f"  {name}: {sub.doc.strip().splitlines()[0] if sub.doc else ''}"
                                   for name, sub in self.subcommands.items())
                         + f"\n\n`{self.prog} NAME --help` describes NAME.")
        else:
            listing = self.flag_values().get_help(include_special_flags=False)
            lines = [line for line in listing.splitlines() if line.startswith(" ")]  # no module headers
            if lines:
                parts.append("flags:\n" + "\n".join(lines))
        return "\n\n".join(p for p in parts if p) + "\n"

    def usage_error(self, message: str) -> NoReturn:
        """Prints `message` and the usage to stderr; raises UsageError (exit status 2)."""
        print(f"{self.prog}: error: {message}\nusage: {self.usage}  (--help for more)",
              file=sys.stderr)
        raise UsageError(message)

    def parse(self, argv: Sequence[str] | None = None) -> types.SimpleNamespace:
        """The parsed flags and positional arguments of `argv` (without the program name;
        None: sys.argv[1:]). --help prints the help and exits with 0; a usage error exits
        with 2 (UsageError)."""
        argv = argv_or_sys(argv)
        if self.subcommands:
            return self._parse_subcommand(argv)
        if any(a in HELP_ARGS for a in _before_double_dash(argv)):
            print(self.help_text(), end="")
            raise SystemExit(0)
        fv = self.flag_values()
        try:
            rest = fv([self.prog, *argv])[1:]
        except flags.Error as e:  # unknown flag, missing required flag, bad value: absl names it
            self.usage_error(str(e))
        values = fv.flag_values_dict()
        values.update(self._positional(rest))
        return types.SimpleNamespace(**values)

    def _parse_subcommand(self, argv: list[str]) -> types.SimpleNamespace:
        if argv and argv[0] in self.subcommands:
            args = self.subcommands[argv[0]].parse(argv[1:])
            args.command = argv[0]
            return args
        if any(a in HELP_ARGS for a in _before_double_dash(argv)):
            print(self.help_text(), end="")
            raise SystemExit(0)
        got = f", got {argv[0]!r}" if argv else ""
        self.usage_error(f"the first argument must be one of {', '.join(self.subcommands)}{got}")

    def _positional(self, rest: list[str]) -> dict[str, object]:
        names = list(self.positional)
        variadic = bool(names) and names[-1].endswith("...")  # the last takes one or more
        if len(rest) < len(names):
            self.usage_error(f"missing positional argument(s): {' '.join(names[len(rest):])}")
        if len(rest) > len(names) and not variadic:
            self.usage_error(f"unexpected argument(s): {' '.join(rest[len(names):])}")
        values: dict[str, object] = {}
        for i, name in enumerate(names):
            key = name.rstrip(".").lower()
            values[key] = rest[i:] if (variadic and i == len(names) - 1) else rest[i]
        return values
