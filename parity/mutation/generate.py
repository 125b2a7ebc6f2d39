"""The mutants: an AST walk over the torch backend, and their application in memory.

A mutant is one node of ``eryx/functional_torch.py`` or ``eryx/models_torch.py`` replaced
(an operator, a sign, a conjugate, a transpose, a real/imag part, a constant or a slice
bound). :func:`apply_mutant` compiles the mutated module's AST and ``exec``s it into the
live module object's ``__dict__``: nothing on disk changes, and it is meant for a forked
child (the parent's modules stay the original).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

#: The files mutated by default, relative to the repository root, and their modules.
MODULES: dict[str, str] = {"eryx/functional_torch.py": "eryx.functional_torch", "eryx/models_torch.py": "eryx.models_torch",
                           # the map engine, moved out of models_torch.py (issue 17): still mutated
                           "eryx/mapengine_torch.py": "eryx.mapengine_torch"}
DEFAULT_FILES: tuple[str, ...] = tuple(MODULES)
ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ mutation operators
#: Binary operator replacements: each operator class -> what it may become.
BINOP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,), ast.Sub: (ast.Add,), ast.Mult: (ast.Div,), ast.Div: (ast.Mult,),
    ast.FloorDiv: (ast.Div,), ast.Mod: (ast.FloorDiv,), ast.Pow: (ast.Mult,), ast.MatMult: (ast.Mult,),
    ast.BitAnd: (ast.BitOr,), ast.BitOr: (ast.BitAnd,), ast.BitXor: (ast.BitAnd,),
    ast.LShift: (ast.RShift,), ast.RShift: (ast.LShift,),
}
#: Comparison replacements: the boundary shift first, then the negation.
COMPARE_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE), ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
}
#: Operators whose chains take one sign mutation at their top (-(a * b) = -a * b = a * -b).
_PRODUCT_OPS = (ast.Mult, ast.Div, ast.MatMult)
#: Attributes and methods that transpose (their removal is a mutant).
TRANSPOSE_ATTRS = ("T", "mT", "mH", "H")
TRANSPOSE_METHODS = ("transpose", "swapaxes", "swapdims", "t")
CONJ_METHODS = ("conj", "conjugate", "conj_physical")
#: Calls whose arguments are messages, never numbers of the model.
_MESSAGE_CALLS = ("print", "warn", "debug", "info", "warning", "error", "exception", "critical", "log")

#: Mutation classes, in the order they are listed in reports.
OPERATORS = ("binop", "augassign", "sign_added", "sign_removed", "not_removed", "invert_removed", "compare",
             "boolop", "constant", "bool_constant", "conj_removed", "conj_added", "transpose_removed",
             "real_imag", "slice")


@dataclass(frozen=True)
class Mutant:
    """One mutant: the node at ``path`` of ``file``'s AST replaced by ``new_node``.

    Attributes
    ----------
    file : str
        Path relative to the repository root (e.g. ``eryx/functional_torch.py``).
    module : str
        The module it is exec'd into (``eryx.functional_torch``).
    line, col : int
        Where the mutated node starts (1-based line, 0-based column).
    function : str
        Qualified name of the enclosing function or class (``<module>`` at the top level).
    operator : str
        The mutation class (one of :data:`OPERATORS`).
    original, mutated : str
        The node's source before and after (``ast.unparse``).
    occurrence : int
        Index among the mutants of this file with the same (function, operator, original,
        mutated): keeps ``id`` unique and stable when unrelated lines move.
    path : tuple
        (field, index or None) steps from the module node to the mutated node.
    """

    file: str
    module: str
    line: int
    col: int
    function: str
    operator: str
    original: str
    mutated: str
    occurrence: int
    path: tuple = dataclasses.field(repr=False, compare=False)
    new_node: Any = dataclasses.field(repr=False, compare=False, hash=False)

    @property
    def id(self) -> str:
        """Stable short id: a hash of what the mutant is, not of where its line is."""
        text = "|".join((self.file, self.function, self.operator, self.original, self.mutated, str(self.occurrence)))
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def describe(self, width: int = 70) -> str:
        """``original -> mutated``, each cut to ``width`` characters."""
        return f"{_cut(self.original, width)}  ->  {_cut(self.mutated, width)}"

    def to_dict(self) -> dict:
        return {"id": self.id, "file": self.file, "line": self.line, "col": self.col, "function": self.function,
                "operator": self.operator, "original": self.original, "mutated": self.mutated}


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


# ------------------------------------------------------------------ the generator
def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_message_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    return name in _MESSAGE_CALLS


def _skipped_fields(node: ast.AST) -> set[str]:
    """Fields of ``node`` that hold no model arithmetic: annotations (type hints)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {"returns"}
    if isinstance(node, ast.arg):
        return {"annotation"}
    if isinstance(node, ast.AnnAssign):
        return {"annotation"}
    return set()


def _negate(node: ast.expr) -> ast.expr:
    return ast.UnaryOp(op=ast.USub(), operand=copy.deepcopy(node))


def _conj(node: ast.expr) -> ast.expr:
    return ast.Call(func=ast.Attribute(value=copy.deepcopy(node), attr="conj", ctx=ast.Load()), args=[], keywords=[])


def _negated_chain(node: ast.BinOp) -> bool:
    """A product chain with a negated factor (-a * b): negating it duplicates removing that sign."""
    factors = [node]
    while factors:
        f = factors.pop()
        if isinstance(f, ast.UnaryOp) and isinstance(f.op, ast.USub):
            return True
        if isinstance(f, ast.BinOp) and isinstance(f.op, _PRODUCT_OPS):
            factors += [f.left, f.right]
    return False


def _is_conj(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CONJ_METHODS
            and not node.args)


def _is_torch_call(node: ast.AST, name: str) -> bool:
    """``torch.NAME(...)`` (the call's function is the attribute NAME of the name ``torch``)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch")


def _number_variants(value: int | float) -> list[int | float]:
    """Replacements of a numeric constant: c + 1, c - 1 for integers; c + 1, -c, 2 c for floats."""
    if isinstance(value, int):
        out = [value + 1, value - 1]
    else:
        out = [value + 1.0] + ([-value, 2.0 * value] if value != 0 else [])
    seen, unique = {repr(value)}, []
    for v in out:
        if repr(v) not in seen:
            seen.add(repr(v))
            unique.append(v)
    return unique


def node_mutations(node: ast.AST, parent: ast.AST | None) -> list[tuple[str, ast.AST]]:
    """Every single mutation of ``node`` itself: a list of (operator class, replacement node).

    ``parent`` decides where a product chain's one sign mutation goes. Children are not
    looked at (the walk visits them); replacements are fresh nodes (``node`` is untouched).
    """
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.BinOp):
        for op in BINOP_SWAPS.get(type(node.op), ()):
            new = copy.deepcopy(node)
            new.op = op()
            out.append(("binop", new))
        if isinstance(node.op, (ast.Add, ast.Sub)) and not isinstance(node.left, (ast.Constant, ast.UnaryOp)):
            new = copy.deepcopy(node)
            new.left = _negate(node.left)
            out.append(("sign_added", new))
        elif isinstance(node.op, _PRODUCT_OPS) and not (
                isinstance(parent, ast.BinOp) and isinstance(parent.op, _PRODUCT_OPS)) and not (
                isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub)) and not _negated_chain(node):
            out.append(("sign_added", _negate(node)))
        if isinstance(node.op, ast.MatMult):
            for side in ("left", "right"):
                operand = getattr(node, side)
                if not _is_conj(operand):
                    new = copy.deepcopy(node)
                    setattr(new, side, _conj(operand))
                    out.append(("conj_added", new))
    elif isinstance(node, ast.AugAssign):
        for op in BINOP_SWAPS.get(type(node.op), ()):
            new = copy.deepcopy(node)
            new.op = op()
            out.append(("augassign", new))
    elif isinstance(node, ast.UnaryOp):
        kind = {ast.USub: "sign_removed", ast.UAdd: "sign_removed", ast.Not: "not_removed",
                ast.Invert: "invert_removed"}[type(node.op)]
        out.append((kind, copy.deepcopy(node.operand)))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for swap in COMPARE_SWAPS.get(type(op), ()):
                new = copy.deepcopy(node)
                new.ops[i] = swap()
                out.append(("compare", new))
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("boolop", new))
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            out.append(("bool_constant", ast.Constant(value=not node.value)))
        elif isinstance(node.value, (int, float)):
            out.extend(("constant", ast.Constant(value=v)) for v in _number_variants(node.value))
    elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        if node.attr in TRANSPOSE_ATTRS:
            out.append(("transpose_removed", copy.deepcopy(node.value)))
        elif node.attr in ("real", "imag"):
            new = copy.deepcopy(node)
            new.attr = "imag" if node.attr == "real" else "real"
            out.append(("real_imag", new))
    elif isinstance(node, ast.Call):
        f = node.func
        if _is_conj(node):
            out.append(("conj_removed", copy.deepcopy(f.value)))
        elif isinstance(f, ast.Attribute) and f.attr in TRANSPOSE_METHODS and not (
                isinstance(f.value, ast.Name) and f.value.id == "torch") and len(node.args) in (0, 2):
            out.append(("transpose_removed", copy.deepcopy(f.value)))
        elif (_is_torch_call(node, "conj") or _is_torch_call(node, "transpose")) and node.args:
            kind = "conj_removed" if f.attr == "conj" else "transpose_removed"
            out.append((kind, copy.deepcopy(node.args[0])))
        elif (_is_torch_call(node, "real") or _is_torch_call(node, "imag")) and node.args:
            new = copy.deepcopy(node)
            new.func.attr = "imag" if f.attr == "real" else "real"
            out.append(("real_imag", new))
    elif isinstance(node, ast.Slice):
        for bound in ("lower", "upper"):
            value = getattr(node, bound)
            if value is not None and not isinstance(value, (ast.Constant, ast.UnaryOp)):
                new = copy.deepcopy(node)
                setattr(new, bound, ast.BinOp(left=copy.deepcopy(value), op=ast.Add(), right=ast.Constant(value=1)))
                out.append(("slice", new))
    return out


def _walk(node: ast.AST, path: tuple, scope: str, parent: ast.AST | None) -> Iterator[tuple[tuple, str, ast.AST,
                                                                                           ast.AST | None]]:
    """(path, scope, node, parent) of every node that may be mutated, in source order.

    Skipped whole: docstrings, type hints, f-strings and other strings, ``raise``
    statements (exception types and messages), message calls (print, warnings, logging),
    imports and ``global``/``nonlocal``.
    """
    if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)):
        return
    if _is_message_call(node):
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        scope = node.name if scope == "<module>" else f"{scope}.{node.name}"
    yield path, scope, node, parent
    skipped = _skipped_fields(node)
    for field, value in ast.iter_fields(node):
        if field in skipped:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    if field == "body" and i == 0 and _is_docstring(item) and isinstance(
                            node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        continue
                    if _is_docstring(item):  # a bare string statement anywhere: a comment
                        continue
                    yield from _walk(item, path + ((field, i),), scope, node)
        elif isinstance(value, ast.AST):
            yield from _walk(value, path + ((field, None),), scope, node)


def parse_file(file: str, root: Path = ROOT) -> ast.Module:
    """The AST of ``file`` (relative to ``root``)."""
    path = root / file
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def generate_mutants(file: str, module: str | None = None, root: Path = ROOT) -> list[Mutant]:
    """Every mutant of ``file``, in source order (deterministic).

    Parameters
    ----------
    file : str
        Path relative to ``root``, e.g. ``eryx/functional_torch.py``.
    module : str, optional
        The module to exec mutants into (default: from :data:`MODULES`, else the path).
    """
    module = module or MODULES.get(file) or file.removesuffix(".py").replace("/", ".")
    tree = parse_file(file, root)
    counts: dict[tuple, int] = {}
    mutants = []
    for path, scope, node, parent in _walk(tree, (), "<module>", None):
        for operator, new in node_mutations(node, parent):
            original, mutated = ast.unparse(node), ast.unparse(new)
            if original == mutated:
                continue
            key = (scope, operator, original, mutated)
            occurrence = counts.get(key, 0)
            counts[key] = occurrence + 1
            mutants.append(Mutant(file=file, module=module, line=getattr(node, "lineno", 0),
                                  col=getattr(node, "col_offset", 0), function=scope, operator=operator,
                                  original=original, mutated=mutated, occurrence=occurrence, path=path,
                                  new_node=new))
    return mutants


def all_mutants(files: Sequence[str] = DEFAULT_FILES, root: Path = ROOT) -> list[Mutant]:
    """The mutants of every file, file by file."""
    return [m for f in files for m in generate_mutants(f, root=root)]


def mutated_tree(mutant: Mutant, root: Path = ROOT) -> ast.Module:
    """The module's AST with the mutant applied (locations fixed, ready to compile)."""
    tree = parse_file(mutant.file, root)
    holder: Any = tree
    for field, index in mutant.path[:-1]:
        holder = getattr(holder, field) if index is None else getattr(holder, field)[index]
    field, index = mutant.path[-1]
    old = getattr(holder, field) if index is None else getattr(holder, field)[index]
    new = copy.deepcopy(mutant.new_node)
    ast.copy_location(new, old)
    if index is None:
        setattr(holder, field, new)
    else:
        getattr(holder, field)[index] = new
    return ast.fix_missing_locations(tree)


def compile_mutant(mutant: Mutant, root: Path = ROOT):
    """Code object of the mutated module (tracebacks name the original file and lines)."""
    return compile(mutated_tree(mutant, root), str(root / mutant.file), "exec", dont_inherit=True)


def apply_mutant(mutant: Mutant, root: Path = ROOT) -> None:
    """Exec the mutated module into the live module object (this process only: forked children)."""
    import importlib

    code = compile_mutant(mutant, root)
    module = importlib.import_module(mutant.module)
    exec(code, module.__dict__)  # noqa: S102 -- the point: run the mutant in the module's namespace


def select_mutants(mutants: Sequence[Mutant], *, sample: int | None = None, seed: int = 0, limit: int | None = None,
                   ids: Iterable[str] | None = None, operators: Iterable[str] | None = None) -> list[Mutant]:
    """A subset, in the original order: by id, by operator class, a seeded random sample, the first N."""
    out = list(mutants)
    if ids:
        wanted = set(ids)
        unknown = wanted - {m.id for m in out}
        if unknown:
            raise ValueError(f"unknown mutant id(s): {', '.join(sorted(unknown))}")
        out = [m for m in out if m.id in wanted]
    if operators:
        ops = set(operators)
        bad = ops - set(OPERATORS)
        if bad:
            raise ValueError(f"unknown operator class(es) {', '.join(sorted(bad))}; known: {', '.join(OPERATORS)}")
        out = [m for m in out if m.operator in ops]
    if sample is not None and sample < len(out):
        keep = set(random.Random(seed).sample(range(len(out)), sample))
        out = [m for i, m in enumerate(out) if i in keep]
    if limit is not None:
        out = out[:limit]
    return out


def file_hashes(files: Iterable[str], root: Path = ROOT) -> dict[str, str]:
    """sha256 of each mutated file: cached results are valid only for the same source."""
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}
