"""Operation-level trace of torch code compared with itself (another dtype, device, commit).

:class:`OpTrace` is a ``TorchDispatchMode``: every dispatched aten operation is recorded
with the source line of the user code that issued it (the innermost frame outside torch
and this module), the shapes and dtypes of its tensor arguments, a copy of its output
(NumPy, on the CPU) and, for each tensor argument, where it came from: the output of an
earlier recorded operation, or a leaf (a tensor created outside the trace, whose value is
then recorded too). Copies beyond a memory budget are spilled to ``.npy`` files and read
back memory-mapped. Integer and boolean outputs are kept (indices matter), sizes are
bounded by the stage traced.

:func:`compare_traces` aligns two streams (identical (op, source line) sequences pair
one to one; otherwise ``difflib.SequenceMatcher`` on (op, source line) pairs and the
place where alignment first broke is reported), compares every aligned output under a
tolerance that follows the narrower dtype and the operation's reduction size
(:func:`op_tolerance`), and names

- the **root operation**: the first aligned operation whose inputs agree within their
  tolerance and whose output does not, with its evidence (inputs' errors, output error,
  tolerance), never claimed otherwise;
- the **amplifiers** (precision comparisons): operations whose output's relative error
  exceeds ``AMPLIFY_FACTOR`` times the largest of their inputs' errors (and of the
  working precision's eps).

In-place operations are recorded as producing their (mutated) first argument; a view
mutated in place after an earlier operation read its base is not re-versioned (the
earlier operation keeps the value it produced), a limit stated in docs/locate.md.
"""
from __future__ import annotations

import difflib
import os
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Bytes of operation outputs kept in memory per trace; beyond it they are spilled to disk.
TRACE_BUDGET = int(os.environ.get("PARITY_TRACE_BUDGET", 1 << 30))
#: An amplifier multiplies its inputs' relative error by more than this.
AMPLIFY_FACTOR = 100.0
#: Tolerance of an operation's output: TOL_ULPS * eps * max(1, reduction size), normwise relative.
TOL_ULPS = 16.0
_SKIP = (os.path.dirname(torch.__file__), os.path.abspath(__file__), os.path.dirname(os.path.abspath(__import__("contextlib").__file__)))
_REDUCTIONS = {"sum", "mean", "nansum", "prod", "norm", "linalg_vector_norm", "amax", "amin", "var", "std",
               "cumsum", "logsumexp"}
#: Operations whose output is uninitialised memory: never compared.
_UNINITIALISED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted"}
#: Operations that move or alias values without computing new ones (not named as a root).
_VIEWLIKE = {"view", "_unsafe_view", "clone", "detach", "alias", "expand", "permute", "transpose", "t", "contiguous",
             "unsqueeze", "squeeze", "slice", "select", "lift_fresh", "reshape", "copy_", "view_as_real",
             "view_as_complex", "as_strided", "index_select", "cat", "stack"}
#: Decompositions whose outputs are defined up to a gauge (signs, phases, rotations of
#: degenerate subspaces): their outputs and what is computed from them are not judged until
#: an operation recombines them into a value that agrees again (e.g. U S Vh).
_GAUGE = {"_linalg_svd", "linalg_svd", "svd", "_linalg_eigh", "linalg_eigh", "linalg_eig", "linalg_qr", "geqrf"}
_MATMULS = {"mm", "bmm", "addmm", "baddbmm", "matmul", "dot", "vdot", "mv", "addmv", "einsum", "_unsafe_view"}


class Spilled:
    """An operation's output written to disk above the memory budget; ``load()`` reads it."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> np.ndarray:
        return np.load(self.path, allow_pickle=False)


def _arr(x: Any) -> Any:
    return x.load() if isinstance(x, Spilled) else x


@dataclass
class Op:
    """One recorded operation."""

    index: int
    op: str
    where: str
    in_shapes: list
    in_dtypes: list
    sources: list  # per tensor argument: ("op", index) or ("leaf", leaf key)
    out_shape: tuple
    out_dtype: str
    reduction: int
    value: np.ndarray | None
    #: An in-place write through a view: the last source is the view's base, whose error the
    #: written base keeps (the value recorded is the view's).
    via_base: bool = False

    @property
    def key(self) -> str:
        return f"{self.op}@{self.where}"

    def label(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) or "()" for s in self.in_shapes)
        return f"{self.where}  aten.{self.op}({shapes})"


def _forward_line(node) -> str | None:
    """The user line that created autograd ``node`` (recorded by anomaly mode), or None."""
    import re

    text = "".join((getattr(node, "metadata", None) or {}).get("traceback_", []) or [])
    frames = re.findall(r'File "([^"]+)", line (\d+)', text)
    for name, line in reversed(frames):
        if not name.startswith(_SKIP) and "/torch/" not in name and "<frozen" not in name:
            rel = os.path.relpath(name)
            return f"{name if rel.startswith('..') else rel}:{line}"
    return None


def _source_line() -> str:
    node = torch._C._current_autograd_node()
    if node is not None:  # a backward operation: the line of the forward operation it differentiates
        line = _forward_line(node)
        if line:
            return f"{line} (backward)"
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if not name.startswith(_SKIP) and "<frozen" not in name and "/torch/" not in name:
            return f"{os.path.relpath(name) if not os.path.relpath(name).startswith('..') else name}:{f.f_lineno}"
        f = f.f_back
    return "?"


def reduction_size(op: str, in_shapes: Sequence[tuple], out_shape: tuple) -> int:
    """Terms of the longest sum behind one output element (1 for elementwise operations)."""
    base = op.split(".")[0]
    if not in_shapes or not in_shapes[0]:
        return 1
    if base in _MATMULS and len(in_shapes[0]) >= 1:
        return int(in_shapes[0][-1])
    if base in _REDUCTIONS:
        n_in, n_out = int(np.prod(in_shapes[0])), max(int(np.prod(out_shape or (1,))), 1)
        return max(n_in // n_out, 1)
    if base.startswith("linalg_") or base in ("cholesky", "inverse", "_linalg_eigh", "_linalg_svd", "linalg_inv_ex",
                                               "triangular_solve", "_linalg_solve_ex"):
        return int(in_shapes[0][-1]) ** 2  # factorisations: n steps, each conditioned by n
    return 1


def _np(t: torch.Tensor) -> np.ndarray | None:
    """The tensor's value as NumPy; None where it has none (meta tensors: shapes only)."""
    t = t.detach()
    if t.is_meta:  # autograd's shape-only tensors (e.g. a custom Function's metadata): nothing to compare
        return None
    if t._is_zerotensor():  # autograd's efficient zeros (no storage): a gradient that is exactly zero
        return np.zeros(tuple(t.shape), dtype=torch.empty((), dtype=t.dtype).numpy().dtype)
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t.cpu().numpy().copy()


class OpTrace(TorchDispatchMode):
    """Record every dispatched operation (``with OpTrace() as tr: ...``; ``tr.ops``)."""

    def __init__(self, budget: int = TRACE_BUDGET) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.leaves: dict[str, np.ndarray] = {}
        self._made: dict[int, tuple[weakref.ref, int]] = {}
        self._leaf_ids: dict[int, tuple[weakref.ref, str]] = {}
        self.budget, self.bytes, self.spilled = budget, 0, 0
        self.result: np.ndarray | None = None
        self.result_op: int | None = None
        self.error: str | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def mark_result(self, t: Any) -> None:
        """Note which recorded operation produced the traced computation's result ``t``."""
        made = self._made.get(id(t)) if isinstance(t, torch.Tensor) else None
        self.result_op = made[1] if made is not None and made[0]() is t else None

    def _keep(self, arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None:
            return None
        if self.bytes + arr.nbytes <= self.budget:
            self.bytes += arr.nbytes
            return arr
        self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="parity-trace-")
        path = os.path.join(self._tmp.name, f"v{len(self.ops)}_{len(self.leaves)}.npy")
        np.save(path, arr, allow_pickle=False)
        self.spilled += arr.nbytes
        return Spilled(path)  # read back when compared (no open file per value)

    def _source(self, t: torch.Tensor) -> tuple[str, Any]:
        made = self._made.get(id(t))
        if made is not None and made[0]() is t:
            return ("op", made[1])
        leaf = self._leaf_ids.get(id(t))
        if leaf is not None and leaf[0]() is t:
            return ("leaf", leaf[1])
        key = f"leaf{len(self.leaves)}"
        self.leaves[key] = self._keep(_np(t))
        try:
            self._leaf_ids[id(t)] = (weakref.ref(t), key)
        except TypeError:
            pass
        return ("leaf", key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in _flat(args) + _flat(list(kwargs.values())) if isinstance(a, torch.Tensor)]
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else name
        with torch._C.DisableTorchFunction():
            sources = [self._source(t) for t in tensors]
            first = out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else out
            base = args[0]._base if name.endswith("_") and args and isinstance(args[0], torch.Tensor) else None
            if base is not None:  # an in-place write through a view: the base is read and changed too
                sources.append(self._source(base))
                tensors.append(base)
            value = self._keep(_np(first)) if isinstance(first, torch.Tensor) else None
        in_shapes = [tuple(t.shape) for t in tensors]
        op = Op(len(self.ops), name, _source_line(), in_shapes, [str(t.dtype).removeprefix("torch.") for t in tensors],
                sources, tuple(first.shape) if isinstance(first, torch.Tensor) else (),
                str(first.dtype).removeprefix("torch.") if isinstance(first, torch.Tensor) else "",
                reduction_size(name, in_shapes, tuple(first.shape) if isinstance(first, torch.Tensor) else ()), value,
                via_base=base is not None)
        self.ops.append(op)
        produced = list(out) if isinstance(out, (tuple, list)) else [out]
        if base is not None:
            produced.append(base)
        for t in produced:
            if isinstance(t, torch.Tensor):
                try:
                    self._made[id(t)] = (weakref.ref(t), op.index)
                except TypeError:
                    pass
        return out

    # -- transport (a trace from another torch version or commit)
    def save(self, path: str) -> None:
        import json

        arrays = {f"op{o.index}": np.asarray(_arr(o.value)) for o in self.ops if o.value is not None}
        arrays.update({k: np.asarray(_arr(v)) for k, v in self.leaves.items()})
        meta = [{k: getattr(o, k) for k in ("index", "op", "where", "in_shapes", "in_dtypes", "sources", "out_shape",
                                             "out_dtype", "reduction", "via_base")} for o in self.ops]
        arrays["__meta__"] = np.frombuffer(json.dumps({"ops": meta, "torch": torch.__version__,
                                                       "result_op": self.result_op}).encode(), dtype=np.uint8)
        if self.result is not None:
            arrays["__result__"] = np.asarray(self.result)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str) -> "OpTrace":
        import json

        tr = cls()
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            for m in meta["ops"]:
                tr.ops.append(Op(m["index"], m["op"], m["where"], [tuple(s) for s in m["in_shapes"]], m["in_dtypes"],
                                 [tuple(s) for s in m["sources"]], tuple(m["out_shape"]), m["out_dtype"],
                                 m["reduction"], z[f"op{m['index']}"] if f"op{m['index']}" in z else None,
                                 bool(m.get("via_base"))))
            tr.leaves = {k: z[k] for k in z.files if k.startswith("leaf")}
            tr.result_op = meta.get("result_op")
            tr.result = z["__result__"] if "__result__" in z.files else None
        return tr


def _flat(xs) -> list:
    out = []
    for x in xs:
        if isinstance(x, (list, tuple)):
            out += _flat(x)
        else:
            out.append(x)
    return out


# ------------------------------------------------------------------ comparison
def _eps(*dtypes: str) -> float:
    single = any(d in ("float32", "complex64") for d in dtypes)
    half = any(d in ("float16", "bfloat16", "complex32") for d in dtypes)
    return 2.0 ** -10 if half else (float(np.finfo(np.float32).eps) if single else float(np.finfo(np.float64).eps))


def rel_error(e: np.ndarray | None, a: np.ndarray | None) -> float:
    """max|a - e| / max|e| over elements finite in both; inf for a NaN-pattern or shape mismatch."""
    if e is None or a is None:
        return 0.0
    e, a = np.asarray(_arr(e)), np.asarray(_arr(a))
    if e.shape != a.shape or np.iscomplexobj(e) != np.iscomplexobj(a):
        return float("inf")
    if e.dtype == bool or a.dtype == bool or np.issubdtype(e.dtype, np.integer):
        return 0.0 if np.array_equal(e, a) else float("inf")
    e, a = e.astype(np.complex128 if np.iscomplexobj(e) or np.iscomplexobj(a) else np.float64), a.astype(
        np.complex128 if np.iscomplexobj(e) or np.iscomplexobj(a) else np.float64)
    fe, fa = np.isfinite(e), np.isfinite(a)
    if not np.array_equal(fe, fa):
        return float("inf")
    if not fe.any():
        return 0.0
    scale = float(np.max(np.abs(e[fe])))
    diff = float(np.max(np.abs(a[fe] - e[fe])))
    return diff / scale if scale else (0.0 if diff == 0 else float("inf"))


def op_tolerance(op: Op, other: Op, exact: bool = False, eps: float = 0.0) -> float:
    """Normwise relative tolerance of an output: TOL_ULPS eps(narrower dtype) max(1, reduction size).

    ``eps``: a floor for the working precision (a precision comparison judges every
    operation at the narrower run's eps, including the float64 copies that run makes).
    """
    if exact:
        return 0.0
    eps = max(eps, _eps(op.out_dtype, other.out_dtype, *op.in_dtypes, *other.in_dtypes))
    return TOL_ULPS * eps * max(1, op.reduction)


@dataclass
class OpResult:
    ref: int
    cand: int
    label: str
    error: float
    tolerance: float
    input_error: float
    amplification: float


@dataclass
class TraceComparison:
    """The aligned streams, the root operation and the amplifiers."""

    n_ref: int
    n_cand: int
    aligned: list[OpResult]
    root: OpResult | None
    amplifiers: list[OpResult]
    alignment: str
    precision: bool
    notes: list[str] = field(default_factory=list)
    unaligned_root: str | None = None
    #: Reference ops whose error reaches the stage's result, gauge outputs excluded (the ranking's domain).
    reaching: set[int] = field(default_factory=set)
    amplify: float = AMPLIFY_FACTOR

    def summary(self) -> str:
        lines = [f"operation trace: {self.n_ref} reference ops, {self.n_cand} candidate ops; {self.alignment}"]
        if self.root is not None:
            r = self.root
            lines.append(f"root operation: {r.label}  error {r.error:.3g}")
            lines.append(f"  evidence: inputs' error {r.input_error:.3g} (within their tolerance), output error "
                         f"{r.error:.3g} > tolerance {r.tolerance:.3g} (16 eps x reduction size)")
        elif self.unaligned_root:
            lines.append(f"root operation: {self.unaligned_root}")
        else:
            lines.append("root operation: none claimed (no aligned operation diverges with agreeing inputs)")
        if self.precision and self.amplifiers:
            lines.append(f"amplifiers (output error > {self.amplify:g} x inputs' error):")
            for a in self.amplifiers[:10]:
                lines.append(f"  x{a.amplification:9.3g}  {a.label}  error {a.input_error:.2g} -> {a.error:.2g}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"kind": "trace", "n_ref": self.n_ref, "n_cand": self.n_cand, "alignment": self.alignment,
                "precision": self.precision, "root": asdict(self.root) if self.root else None,
                "unaligned_root": self.unaligned_root,
                "amplifiers": [asdict(a) for a in self.amplifiers], "notes": self.notes,
                "stream": [asdict(a) for a in self.aligned]}


def align(ref: Sequence[Op], cand: Sequence[Op]) -> tuple[list[tuple[int, int]], str, list]:
    """Pairs (i_ref, i_cand) of aligned operations, a sentence on how, and the unaligned segments.

    Identical (op, source line) sequences pair one to one. Otherwise difflib's matching
    blocks pair; inside a replaced segment, operations pair by position while their op
    names agree (the same computation on edited lines). Segments are difflib opcodes
    ``(tag, i1, i2, j1, j2)`` other than ``equal``.
    """
    ka, kb = [o.key for o in ref], [o.key for o in cand]
    if ka == kb:
        return list(zip(range(len(ref)), range(len(cand)))), "identical operation sequences (aligned one to one)", []
    sm = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    pairs, segments = [], []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            pairs += [(i1 + k, j1 + k) for k in range(i2 - i1)]
            continue
        k = 0
        if tag == "replace":
            while i1 + k < i2 and j1 + k < j2 and ref[i1 + k].op == cand[j1 + k].op:
                pairs.append((i1 + k, j1 + k))
                k += 1
        if i1 + k < i2 or j1 + k < j2:
            segments.append((tag, i1 + k, i2, j1 + k, j2))
    pairs.sort()
    text = f"sequence alignment on (op, source line): {len(pairs)} operations aligned"
    if segments:
        tag, i1, i2, j1, j2 = segments[0]
        where_r = ref[i1].label() if i1 < len(ref) else "the end"
        where_c = cand[j1].label() if j1 < len(cand) else "the end"
        text += (f"; alignment first breaks at reference op {i1} ({where_r}) / candidate op {j1} ({where_c}): "
                 f"{i2 - i1} reference and {j2 - j1} candidate ops without a counterpart")
    return pairs, text, segments


def compare_traces(ref: OpTrace, cand: OpTrace, *, exact: bool = False, precision: bool | None = None,
                   amplify: float = AMPLIFY_FACTOR) -> TraceComparison:
    """Align and compare two traces (see the module docstring).

    ``precision``: the two runs differ in working precision on purpose (float32 against
    float64): every operation is judged at the narrower eps and amplifiers are named.
    Default: whether aligned outputs differ in dtype. ``amplify``: the amplifiers' factor.
    """
    pairs, how, segments = align(ref.ops, cand.ops)
    cand_of = dict(pairs)
    ref_of = {j: i for i, j in pairs}
    if precision is None:
        precision = any(ref.ops[i].out_dtype != cand.ops[j].out_dtype for i, j in pairs[:200])
    low = max((_eps(ref.ops[i].out_dtype, cand.ops[j].out_dtype) for i, j in pairs), default=0.0) if precision else 0.0
    err_ref: dict[int, float] = {}
    ok_ref: dict[int, bool] = {}
    results, root, amps, unaligned_feed = [], None, [], None
    in_ok_of: dict[int, bool] = {}
    gauge: set[int] = set()
    uninit: set[int] = set()
    for i, j in pairs:
        a, b = ref.ops[i], cand.ops[j]
        tol = op_tolerance(a, b, exact, low)
        in_errs, in_ok = [], True
        for sa, sb in zip(a.sources, b.sources):
            if sb[0] == "op" and sb[1] not in ref_of:  # fed by an operation the reference does not run
                in_ok = False
                in_errs.append(float("inf"))
            elif sa[0] == "op" and sb[0] == "op":
                same = cand_of.get(sa[1]) == sb[1]
                in_ok = in_ok and same and ok_ref.get(sa[1], False)
                if sa[1] not in gauge:  # a gauge-free input's error is unknown, not large
                    in_errs.append(err_ref.get(sa[1], float("inf")) if same else float("inf"))
            elif sa[0] == "leaf" and sb[0] == "leaf":
                e = rel_error(ref.leaves.get(sa[1]), cand.leaves.get(sb[1]))
                in_ok = in_ok and e <= tol
                in_errs.append(e)
            else:
                in_ok = False
                in_errs.append(float("inf"))
        op_srcs = [s[1] for s in a.sources if s[0] == "op"]
        if a.op in _UNINITIALISED or (a.op in _VIEWLIKE and a.op != "copy_" and op_srcs
                                      and all(k in uninit for k in op_srcs)):
            uninit.add(i)  # uninitialised memory (a buffer for out=) and views of it: never compared
        err = 0.0 if i in uninit else rel_error(a.value, b.value)
        if a.via_base and a.sources and a.sources[-1][0] == "op":
            err = max(err, err_ref.get(a.sources[-1][1], 0.0))
        fed_by_gauge = any(s[0] == "op" and s[1] in gauge for s in a.sources)
        if a.op in _GAUGE or (fed_by_gauge and err > tol):
            gauge.add(i)  # not judged: the decomposition's freedom, not an error
            in_ok = False
        err_ref[i], ok_ref[i] = err, err <= tol or i in gauge
        if err > tol and unaligned_feed is None:
            fed = [sb[1] for sb in b.sources if sb[0] == "op" and sb[1] not in ref_of]
            if fed:
                unaligned_feed = (i, j, fed[0])
        in_err = max(in_errs, default=0.0)
        floor = max(in_err, _eps(a.out_dtype, b.out_dtype) if precision else 0.0)
        amp = err / floor if floor > 0 and np.isfinite(err) else (float("inf") if err > 0 else 1.0)
        label = b.label() if a.where == b.where else f"{b.label()}  (reference: {a.where})"
        res = OpResult(i, j, label, err, tol, in_err, amp)
        results.append(res)
        in_ok_of[i] = in_ok
    # Operations whose error reaches the stage's result (through outputs that carry error):
    # an amplifier elsewhere (a mask, an index) cannot change the result's numbers.
    sink = ref.result_op if getattr(ref, "result_op", None) is not None else len(ref.ops) - 1
    reach = _reaching(ref, {r.ref: r for r in results}, sink, low)
    for res in results:
        relevant = res.ref in reach and res.ref not in gauge
        if res.ref in gauge:
            continue
        if root is None and res.error > res.tolerance and in_ok_of[res.ref] and (relevant or not precision):
            root = res
        if precision and relevant and np.isfinite(res.error) and np.isfinite(res.input_error) \
                and res.amplification > amplify and res.error > res.tolerance:
            amps.append(res)
    amps.sort(key=lambda r: -r.amplification)
    out = TraceComparison(len(ref.ops), len(cand.ops), results, root, amps, how, precision,
                          reaching=reach - gauge, amplify=amplify)
    final = rel_error(getattr(ref, "result", None), getattr(cand, "result", None))
    final_tol = TOL_ULPS * low if precision else 0.0
    if root is None and segments and (unaligned_feed is not None or final > final_tol):
        # The divergence comes from operations only one side runs: name the first of them.
        if unaligned_feed:
            j = _first_computing_ancestor(cand, unaligned_feed[2], ref_of)
        else:  # unaligned operations no aligned one reads: the first of them that computes
            extra = [k for s in segments for k in range(s[3], s[4])]
            j = next((k for k in extra if cand.ops[k].op not in _VIEWLIKE), extra[0] if extra else None)
        if j is not None:
            op = cand.ops[j]
            why = (f"feeds aligned op {cand.ops[unaligned_feed[1]].label()} whose output differs"
                   if unaligned_feed else f"the stage's result differs by {final:.3g} (normwise)")
            out.unaligned_root = f"{op.label()}  (an operation the reference does not run; {why}; every aligned " \
                                 f"operation before it agrees)"
    for name, tr in (("reference", ref), ("candidate", cand)):
        if tr.spilled:
            out.notes.append(f"the {name} trace passed its memory budget: {tr.spilled / 2**20:.1f} MiB spilled to disk")
    return out


def _reaching(trace: OpTrace, results: dict, sink: int, floor: float = 0.0) -> set[int]:
    """Reference ops whose error flows into op ``sink`` through outputs that carry error
    (beyond their tolerance; in a precision comparison, beyond the narrower eps)."""
    seen, todo = set(), [sink]
    while todo:
        k = todo.pop()
        if k in seen or k < 0:
            continue
        seen.add(k)
        for src in trace.ops[k].sources:
            r = results.get(src[1]) if src[0] == "op" else None
            if r is not None and r.error > (floor if floor else r.tolerance) and src[1] not in seen:
                todo.append(src[1])
    return seen


def _first_computing_ancestor(trace: OpTrace, j: int, aligned: dict) -> int:
    """The earliest unaligned operation behind op ``j`` (through unaligned ops only) that
    computes values (not a view or copy); ``j`` itself when there is none."""
    seen, todo = {j}, [j]
    while todo:
        k = todo.pop()
        for src in trace.ops[k].sources:
            if src[0] == "op" and src[1] not in aligned and src[1] not in seen:
                seen.add(src[1])
                todo.append(src[1])
    computing = sorted(k for k in seen if trace.ops[k].op not in _VIEWLIKE)
    return computing[0] if computing else j


# ----------------------------------------------------------------- promotion
class PromoteOps(TorchDispatchMode):
    """Run chosen operations in float64 (complex128) and cast their outputs back.

    ``sites``: (op name, "file:line") pairs, e.g. the amplifiers of :func:`compare_traces`
    or :func:`parity.locate.precision.rank_sites`, or "file:line" (every op of that line). The rest of the computation keeps its
    dtype: a float32 run with those operations promoted. ``keep``: the outputs stay in
    float64 and every later operation reading a float64 tensor runs in float64 too (the
    computation from those sites on; an in-place or ``out=`` write keeps its buffer's dtype,
    its other arguments are cast to it: a buffer made at a kept site accumulates in float64).
    """

    def __init__(self, sites: set, keep: bool = False) -> None:
        super().__init__()
        self.sites, self.keep = set(sites), keep
        self.hits = 0
        self._wide: dict[int, weakref.ref] = {}  # tensors this mode made float64 (keep)

    def _is_wide(self, x: Any) -> bool:
        ref = self._wide.get(id(x)) if isinstance(x, torch.Tensor) else None
        return ref is not None and ref() is x

    def _mark(self, out: Any) -> Any:
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype in (torch.float64, torch.complex128):
                self._wide[id(t)] = weakref.ref(t)
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
        in_place = name.endswith("_") or "out" in kwargs
        # Only what this mode widened counts: an input converted from float64 data stays narrow.
        wide = self.keep and any(self._is_wide(x) for x in torch.utils._pytree.tree_leaves((args, kwargs)))
        up = {torch.float32: torch.float64, torch.complex64: torch.complex128}
        down = {torch.float64: torch.float32, torch.complex128: torch.complex64}

        def cast(x, table):
            return x.to(table[x.dtype]) if isinstance(x, torch.Tensor) and x.dtype in table else x

        if in_place and wide:  # the write keeps its buffer's dtype: the other arguments follow it
            target = kwargs["out"] if "out" in kwargs else args[0]
            table = up if target.dtype in down else down
            return func(*torch.utils._pytree.tree_map(lambda x: x if x is target else cast(x, table), args),
                        **torch.utils._pytree.tree_map(lambda x: x if x is target else cast(x, table), kwargs))
        # A view must stay a view of its base (a cast would copy it and lose later writes).
        if in_place or any(r.alias_info is not None for r in getattr(getattr(func, "_schema", None), "returns", ())):
            out = func(*args, **kwargs)
            return self._mark(out) if wide else out
        line = _source_line()
        if not (wide or (name, line) in self.sites or line in self.sites):
            return func(*args, **kwargs)
        self.hits += 1
        # A requested dtype widens too (a cast or a buffer made at a promoted site).
        kwargs = {k: up.get(v, v) if k == "dtype" else v for k, v in kwargs.items()}
        out = func(*torch.utils._pytree.tree_map(lambda x: cast(x, up), args),
                   **torch.utils._pytree.tree_map(lambda x: cast(x, up), kwargs))
        if self.keep:
            return self._mark(out)
        return torch.utils._pytree.tree_map(lambda x: cast(x, down), out)


def amplifier_sites(amplifiers: Sequence[OpResult]) -> set[tuple[str, str]]:
    """(op, source line) of each amplifier, for :class:`PromoteOps`."""
    out = set()
    for a in amplifiers:
        where, call = a.label.split("  aten.", 1)
        out.add((call.split("(")[0], where))
    return out


class PerturbOp(TorchDispatchMode):
    """Multiply the output of one operation (op name, "file:line") by (1 + ``rel``): a CPU-only
    stand-in for a device or library whose one operation rounds differently (tests, docs)."""

    def __init__(self, op: str, where: str, rel: float = 1e-6) -> None:
        super().__init__()
        self.site, self.rel, self.hits = (op, where), rel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
        if (name, _source_line()) == self.site and isinstance(out, torch.Tensor) and (out.is_floating_point() or out.is_complex()):
            self.hits += 1
            with torch.no_grad():
                out = out * (1 + self.rel)
        return out
