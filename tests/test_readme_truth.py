"""The README's figures that drift are checked here, or carry the date they were measured
(issue 21): the synopsis names every option of every subcommand, the faults table is the
registry's, the layout names files that exist, "A real run" is the registry's stage list,
and counts of tests, quantities and mutants are dated."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from parity.commands import cli
from parity.backends.faults import FAULTS
from parity.contract.stages import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DATE = re.compile(r"20\d\d-\d\d-\d\d")


def _section(title: str) -> str:
    start = README.index(title)
    match = re.compile(r"^#{2,3} ", re.M).search(README, start + len(title))
    return README[start:match.start() if match else len(README)]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(p: argparse.ArgumentParser, group: str | None = None) -> set[str]:
    groups = [g for g in p._action_groups if group is None or g.title == group]
    return {o for g in groups for a in g._group_actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}


# ------------------------------------------------------------------ synopsis
def synopsis() -> dict[str, str]:
    """``{command: its synopsis text}`` from the README's block under "## The harness"."""
    block = re.search(r"```text\n(parity run .*?)```", _section("## The harness"), re.S).group(1)
    out: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        match = re.match(r"parity ([\w-]+)", line)
        if match:
            for name in re.findall(r"parity ([\w-]+)", line):
                out[name] = ""
            current = match.group(1)
            line = re.sub(r"^parity \w+", "", line)
        if current:
            out[current] += " " + line
    return out


def synopsis_options(text: str) -> set[str]:
    """The options a synopsis entry names; ``(the run options except --x)``, ``(the model options)``
    and ``(the backend options)`` stand for run's options, and its two option groups."""
    run = _subparsers()["run"]
    named = set(re.findall(r"--[a-z][a-z0-9-]*", text))
    for placeholder, options in (("the model options", _options(run, "fixture, grid and model")),
                                 ("the backend options", _options(run, "backends (see 'parity backends')"))):
        if placeholder in text:
            named |= options
    match = re.search(r"\(the run options(?: except ([^)]*))?\)", text)
    if match:
        named |= _options(run)
        named -= set(re.findall(r"--[a-z][a-z0-9-]*", match.group(1) or ""))
    return named


def test_synopsis_names_every_option_of_every_subcommand():
    entries = synopsis()
    subs = _subparsers()
    assert set(entries) == set(subs), f"README synopsis vs subcommands: {set(entries) ^ set(subs)}"
    for name, parser in subs.items():
        named, real = synopsis_options(entries[name]), _options(parser)
        assert named == real, (f"README synopsis of 'parity {name}': missing {sorted(real - named)}, "
                               f"not an option {sorted(named - real)}")


def test_synopsis_check_can_fail():
    # A synopsis entry missing an option is caught (the check is not vacuous).
    entries = synopsis()
    assert synopsis_options(entries["nightly"].replace("[--no-dashboard]", "")) != _options(_subparsers()["nightly"])
    assert "--fail-fast" not in synopsis_options(entries["bisect"])


# ------------------------------------------------------------------ faults table
def test_faults_table_is_the_registry():
    section = _section("### Why a stage diverges")
    rows = re.findall(r"^\| (\w+) \| (\w+) \| [^|]+ \|$", section, re.M)
    rows = [r for r in rows if r[0] != "fault"]
    assert sorted(rows) == sorted((f.name, f.stage) for f in FAULTS.values())


# ------------------------------------------------------------------ layout
@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md"])
def test_layout_names_files_that_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    block = re.search(r"```(?:text)?\n(eryx/ .*?)```", text, re.S).group(1)
    missing, folder, sub = [], None, None
    for line in block.splitlines():
        top = re.match(r"^(\w+)/\s", line)
        if top:
            folder, sub = ROOT / top.group(1), None
            assert folder.is_dir(), line
            continue
        lead = re.match(r"^  ([\w-]+/)\s", line)
        if lead:  # "  backends/  base.py, ...": the names after it (and on its continuation lines) are inside
            sub = lead.group(1)
        elif re.match(r"^  \S", line):
            sub = None
        for name in re.findall(r"(?<![\w./(-])([\w-]+(?:\.py|/))(?=[\s,+)]|$)", line):
            if folder is None:
                continue
            here = [folder / name.rstrip("/")] + ([folder / sub / name.rstrip("/")] if sub else [])
            if not any(p.exists() for p in here):
                missing.append(f"{folder.name}/{name}")
    assert not missing, f"README layout names what does not exist: {missing}"


# ------------------------------------------------------------------ A real run
def test_real_run_lists_the_registry_and_is_dated():
    section = _section("### A real run")
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    names = re.findall(r"^  (\w+)\s+\w+\s+(?:pass|FAIL|fail|ERROR|error|not comparable)\b", block, re.M)
    assert names == list(STAGE_NAMES)
    total = re.search(r"(\d+) of (\d+) stages agree", block)
    assert total and int(total.group(1)) == int(total.group(2)) == len(STAGE_NAMES)
    intro = section[:section.index("```text")]
    assert DATE.search(intro), "say when this run was made"


# ------------------------------------------------------------------ counts that drift are dated
@pytest.mark.parametrize("noun", ["tests", "passed", "quantities", "mutants"])
def test_counts_that_drift_carry_their_date(noun):
    undated = []
    for paragraph in re.split(r"\n\s*\n", README):
        for match in re.finditer(rf"\b\d[\d,]* {noun}\b", paragraph):
            if not DATE.search(paragraph):
                undated.append(match.group(0))
    assert not undated, f"counts without the date they were measured: {undated}"


def test_data_settings_work_from_any_folder():
    block = re.search(r"```bash\n(export ERYX_FIXTURES_DIR.*?)```", README, re.S).group(1)
    for line in block.splitlines():
        value = line.split("=", 1)[1].split()[0]
        assert value.startswith(("/", "$(", "\"$(", "$PWD", "\"$PWD")), f"relative to the current folder: {line}"
