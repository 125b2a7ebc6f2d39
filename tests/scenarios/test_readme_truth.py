"""The documentation's figures that drift are checked here, or carry the date they were
measured (issue 21), wherever they live since the README became a front page (issue 17):
the synopsis (docs/usage.md) names every option of every subcommand, the faults table
(docs/diagnosis.md) is the registry's, the layouts (README.md, docs/architecture.md) name
files that exist, "A real run" (docs/harness.md) is the registry's stage list, counts of
tests, quantities and mutants are dated on every page, the README's test command is the
one .ci/run runs, and every link between the pages resolves, anchors included."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from parity.commands import cli
from parity.backends.faults import FAULTS
from parity.stages import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]
DATE = re.compile(r"20\d\d-\d\d-\d\d")
# Where each checked fact lives (the README links to each page).
SYNOPSIS_DOC, SYNOPSIS_SECTION = "docs/usage.md", "## The `parity` command"
FAULTS_DOC, FAULTS_SECTION = "docs/diagnosis.md", "## Why a stage diverges"
REAL_RUN_DOC, REAL_RUN_SECTION = "docs/harness.md", "## A real run"
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))


def _read(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


README = _read("README.md")


def _section(title: str, doc: str = "README.md") -> str:
    """The text of ``doc`` from the heading starting with ``title`` to the next heading of
    level 2 or 3."""
    text = _read(doc)
    start = text.index(title)
    match = re.compile(r"^#{2,3} ", re.M).search(text, start + len(title))
    return text[start:match.start() if match else len(text)]


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
    """``{command: its synopsis text}`` from the synopsis block of docs/usage.md."""
    block = re.search(r"```text\n(parity run .*?)```", _section(SYNOPSIS_SECTION, SYNOPSIS_DOC), re.S).group(1)
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
    assert set(entries) == set(subs), f"{SYNOPSIS_DOC} synopsis vs subcommands: {set(entries) ^ set(subs)}"
    for name, parser in subs.items():
        named, real = synopsis_options(entries[name]), _options(parser)
        assert named == real, (f"{SYNOPSIS_DOC} synopsis of 'parity {name}': missing {sorted(real - named)}, "
                               f"not an option {sorted(named - real)}")


def test_synopsis_check_can_fail():
    # A synopsis entry missing an option is caught (the check is not vacuous).
    entries = synopsis()
    assert synopsis_options(entries["nightly"].replace("[--no-dashboard]", "")) != _options(_subparsers()["nightly"])
    assert "--fail-fast" not in synopsis_options(entries["bisect"])


# ------------------------------------------------------------------ faults table
def test_faults_table_is_the_registry():
    section = _section(FAULTS_SECTION, FAULTS_DOC)
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
    assert not missing, f"{doc} layout names what does not exist: {missing}"


# ------------------------------------------------------------------ A real run
def test_real_run_lists_the_registry_and_is_dated():
    section = _section(REAL_RUN_SECTION, REAL_RUN_DOC)
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    names = re.findall(r"^  (\w+)\s+\w+\s+(?:pass|FAIL|fail|ERROR|error|not comparable)\b", block, re.M)
    assert names == list(STAGE_NAMES)
    total = re.search(r"(\d+) of (\d+) stages agree", block)
    assert total and int(total.group(1)) == int(total.group(2)) == len(STAGE_NAMES)
    intro = section[:section.index("```text")]
    assert DATE.search(intro), "say when this run was made"


# ------------------------------------------------------------------ counts that drift are dated
def undated_counts(text: str, noun: str) -> list[str]:
    """Counts of ``noun`` ("1,683 passed") in a paragraph that names no date."""
    return [match.group(0) for paragraph in re.split(r"\n\s*\n", text)
            for match in re.finditer(rf"\b\d[\d,]* {noun}\b", paragraph) if not DATE.search(paragraph)]


@pytest.mark.parametrize("noun", ["tests", "passed", "quantities", "mutants"])
def test_counts_that_drift_carry_their_date(noun):
    undated = [f"{doc}: {count}" for doc in PAGES for count in undated_counts(_read(doc), noun)]
    assert not undated, f"counts without the date they were measured: {undated}"


def test_counts_check_can_fail():
    assert undated_counts("We ran 1,683 tests.\n\nOn 2026-12-05: 1,683 passed.", "tests") == ["1,683 tests"]
    assert undated_counts("On 2026-12-05: 1,683 passed.", "passed") == []


@pytest.mark.parametrize("doc", ["README.md", "docs/usage.md"])
def test_data_settings_work_from_any_folder(doc):
    block = re.search(r"```bash\n(export ERYX_FIXTURES_DIR.*?)```", _read(doc), re.S).group(1)
    for line in block.splitlines():
        value = line.split("=", 1)[1].split()[0]
        assert value.startswith(("/", "$(", "\"$(", "$PWD", "\"$PWD")), f"relative to the current folder: {line}"


# ------------------------------------------------------------------ the front page
def test_readme_test_command_is_the_one_ci_runs():
    # The README's second command, and .ci/run's (which adds only pip's -q).
    commands = re.search(r"## Two commands.*?```bash\n(.*?)```", README, re.S).group(1)
    readme_test = commands.split("# the tests", 1)[1].splitlines()[1].strip()
    ci = [line.strip() for line in _read(".ci/run").splitlines() if "python -m pytest" in line and "pip install" in line]
    assert [line.replace("pip install -q ", "pip install ") for line in ci] == [readme_test]
    assert readme_test.endswith("python -m pytest -n 2")
    run = commands.split("# the tests", 1)[0]
    assert readme_test.split(" && ")[0] + " && parity run --html reports/synthetic.html" in run


def test_readme_picture_counts_the_registrys_stages():
    picture = re.search(r"What one run proves:\s*```text\n(.*?)```", README, re.S).group(1)
    assert re.search(r"(\d+) stages in phase order", picture).group(1) == str(len(STAGE_NAMES))


def test_readme_is_a_front_page():
    # About 200 lines (issue 17): the rest lives in docs/, linked from the README.
    assert len(README.splitlines()) <= 220, "move the detail into docs/ and link to it"
    for doc in PAGES[1:]:
        assert f"({doc})" in README, f"the README does not link to {doc}"


# ------------------------------------------------------------------ links between the pages
def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation but '-' and '_'
    dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose, re.M)}


def links(text: str) -> list[tuple[str, str]]:
    """``(path, anchor)`` of every relative Markdown link outside code blocks."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s):, mailto:
        path, _, anchor = target.partition("#")
        out.append((path, anchor))
    return out


def test_slug_is_githubs():
    assert slug("The `parity` command") == "the-parity-command"
    assert slug("The result object (JSON, schema_version 1)") == "the-result-object-json-schema_version-1"
    assert slug("Real runs on `5zck_p1`") == "real-runs-on-5zck_p1"


@pytest.mark.parametrize("doc", PAGES)
def test_links_resolve(doc):
    broken = []
    for path, anchor in links(_read(doc)):
        target = (ROOT / doc).parent / path if path else ROOT / doc
        if not target.exists():
            broken.append(f"{path}#{anchor}" if anchor else path)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{path}#{anchor}")
    assert not broken, f"{doc}: links to what does not exist: {broken}"


# ------------------------------------------------------------------ long modules are explained
def long_modules(limit: int = 600) -> list[str]:
    """Every module of the package over ``limit`` lines, as a path from the repository root."""
    files = sorted(p for top in ("eryx", "parity") for p in (ROOT / top).rglob("*.py"))
    return [str(p.relative_to(ROOT)) for p in files
            if len(p.read_text(encoding="utf-8").splitlines()) > limit]


def test_every_long_module_says_why():
    # Issue 17: no module over about 600 lines without a sentence in docs/architecture.md saying why.
    section = _section("## Modules over 600 lines and why", "docs/architecture.md")
    rows = set(re.findall(r"^\| `([\w/.]+\.py)` \| [\d,]+ \| \S", section, re.M))
    assert rows, "the table of long modules did not parse"
    assert set(long_modules(limit=300)) - rows, "a module under the limit would be reported (the check can fail)"
    missing = [m for m in long_modules() if m not in rows]
    assert not missing, f"modules over 600 lines with no row in docs/architecture.md: {missing}"
