"""Mutation testing of the torch backend, driven by ``parity run``.

Every mutant is the torch backend with one small change -- an operator, a sign, a
conjugate, a transpose, a real/imag part, a constant or a slice bound -- in
``eryx/functional_torch.py`` or ``eryx/models_torch.py``. A mutant is *killed* when
``parity run --fixture 5zck_p1 --no-progress`` exits 1 with it in place.

Nothing is written to ``eryx/``: the driver is a fork server. The parent imports numpy,
torch, gemmi, scipy and the harness once (and, by default, computes the NumPy reference
once: it does not change between mutants); for each mutant a forked child compiles the
mutated module's AST and ``exec``s it into the existing module object's ``__dict__``
(other modules reach the torch backend through these module objects at call time), then
calls :func:`parity.commands.cli.main` and exits with its code. A child that runs past the
timeout is killed.

Commands (``python -m parity.mutation COMMAND --help``)::

    list     the mutants of the files (id, location, operator, original -> mutated)
    run      run mutants through parity run; results (and the resume cache) in --json
    diff     differential check of mutants against the original torch model on many
             grids, fixtures, dtypes and q-vectors (evidence for equivalence)
    report   the score and the survivors of a results file, as Markdown

Modules: :mod:`.generate` (the mutants), :mod:`.execute` (the fork server, results and
resume), :mod:`.diff` (the differential check), :mod:`.report` (scores, Markdown),
:mod:`.cli`. The method, the score and every survivor's verdict are in docs/mutation.md.
"""
from __future__ import annotations

from parity.mutation.diff import CASE_SETS, DIFF_CASES, DIFF_RTOL, PROBE_CASES, DiffCase, compare_outputs, diff_mutants, diff_outputs, diff_verdict
from parity.mutation.execute import (DEFAULT_FIXTURE, DEFAULT_TIMEOUT_S, EXIT_CRASH, EXIT_INVALID, RESULTS_SCHEMA, RunConfig,
                      config_key, default_jobs, harness_hash, load_results, needs_run, run_children,
                      run_mutation, save_results, wait_child, warm_reference)
from parity.mutation.generate import (DEFAULT_FILES, MODULES, OPERATORS, ROOT, Mutant, all_mutants, apply_mutant, compile_mutant,
                       file_hashes, generate_mutants, mutated_tree, node_mutations, parse_file, select_mutants)
from parity.mutation.report import (DEFAULT_VERDICTS, equivalent_ids, format_report, format_summary, load_verdicts, merge_diffs,
                     summarize)
from parity.mutation.cli import main  # noqa: E402 -- after the modules it uses

__all__ = ["CASE_SETS", "DIFF_CASES", "DIFF_RTOL", "PROBE_CASES", "DiffCase", "compare_outputs", "diff_mutants", "diff_outputs", "diff_verdict",
           "DEFAULT_FIXTURE", "DEFAULT_TIMEOUT_S", "EXIT_CRASH", "EXIT_INVALID", "RESULTS_SCHEMA", "RunConfig",
           "config_key", "default_jobs", "harness_hash", "load_results", "needs_run", "run_children", "run_mutation",
           "save_results", "wait_child", "warm_reference", "DEFAULT_FILES", "MODULES", "OPERATORS", "ROOT", "Mutant",
           "all_mutants", "apply_mutant", "compile_mutant", "file_hashes", "generate_mutants", "mutated_tree",
           "node_mutations", "parse_file", "select_mutants", "DEFAULT_VERDICTS", "equivalent_ids", "load_verdicts", "merge_diffs", "format_report", "format_summary",
           "summarize", "main"]
