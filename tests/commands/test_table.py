"""The ``parity`` command is a table of subcommands, one module each (issue 17, item 3)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import parity.commands
from parity.commands import cli
from parity.commands.command import Command

#: The order of 'parity --help' (README and docs list them so).
HELP_ORDER = ["run", "report", "bisect", "check", "dump", "compare", "backends", "new-backend", "bench", "nightly",
              "dashboard", "reduce", "locate", "stages", "faults"]


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_subcommand_module_is_in_the_table_once_in_help_order():
    modules = [importlib.import_module(f"parity.commands.{m.name}")
               for m in pkgutil.iter_modules(parity.commands.__path__)]
    defined = [m.COMMAND for m in modules if isinstance(getattr(m, "COMMAND", None), Command)]
    assert sorted(c.name for c in defined) == sorted(HELP_ORDER)
    assert [c.name for c in cli.TABLE] == HELP_ORDER
    assert set(cli.TABLE) == set(defined)


def test_the_parser_shows_each_commands_help_and_description():
    action = _subparsers(cli.build_parser())
    assert list(action.choices) == HELP_ORDER
    helps = {c.dest: c.help for c in action._choices_actions}
    for command in cli.TABLE:
        assert helps[command.name] == command.help
        assert action.choices[command.name].description == command.description


def test_a_new_subcommand_is_one_entry(monkeypatch, capsys):
    def add_arguments(p):
        p.add_argument("--times", type=int, default=1)

    def handle(args):
        print("hello " * args.times)
        return 7

    hello = Command("hello", help="say hello", description="Say hello, a given number of times.",
                    add_arguments=add_arguments, handle=handle)
    monkeypatch.setattr(cli, "TABLE", cli.TABLE + (hello,))
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "hello": handle})
    assert cli.main(["hello", "--times", "2"]) == 7
    assert capsys.readouterr().out.split() == ["hello", "hello"]
    assert cli.main(["hello", "--times", "x"]) == 2  # its options get the same usage errors
    assert "invalid int value" in capsys.readouterr().err
