r"""Reading discrete Bayesian networks in the BIF format that bnlearn's repository (and pgmpy's
bundled copies) use, from a user's path or by name from the files inside the ``pgmpy==0.1.26``
wheel (read by path; pgmpy's code is never imported)::

    network asia { }
    variable smoke { type discrete [ 2 ] { yes, no }; }
    probability ( smoke ) { table 0.5, 0.5; }
    probability ( lung | smoke ) { (yes) 0.1, 0.9; (no) 0.01, 0.99; }

A malformed file raises :class:`~taskgraph.datasets.DataFileError` naming the file and line.
:func:`~taskgraph.datasets.bayesian_network` samples benchmarks from what :func:`read_bif`
returns.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import taskgraph.datasets._files as _files
from taskgraph.datasets._files import DataFileError
from taskgraph.exceptions import MissingDependencyError, ValidationError

__all__ = ["BayesianNetwork", "read_bif", "bundled_networks", "BIF_INSTALL"]

BIF_INSTALL = "`pip install --no-deps pgmpy==0.1.26`"
_PGMPY_MODELS = ("utils", "example_models")
#: the networks of issue #16's benchmark (all bundled with pgmpy 0.1.26)
BENCHMARK_NETWORKS = ("asia", "sachs", "child", "insurance", "alarm")
#: a CPT row may miss 1 by this much (files round to a few decimals); rows are then renormalised
SUM_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------- the network
@dataclass(frozen=True, eq=False)
class BayesianNetwork:
    """A discrete Bayesian network read from a BIF file.

    Attributes:
        name (str): the ``network`` name (or the file name when the file has none).
        nodes (list of str): variable names, in file order (the task order).
        states (list of list of str): each node's state names; state ``s`` is label ``s``.
        parents (list of list of int): each node's parents (node indices) in the order of its
            ``probability ( X | P1, P2, ... )`` line.
        cpts (list of numpy.ndarray): node ``j``'s table ``[C_j, K_j]``: row ``c`` is
            :math:`P(X_j \\mid \\text{parents in configuration } c)`, where ``c`` is the
            mixed-radix index of the parents' states with the *first* parent most significant
            (``numpy.ravel_multi_index`` order); every row sums to 1.
        source (str): the file read.
    """

    name: str
    nodes: list[str]
    states: list[list[str]]
    parents: list[list[int]]
    cpts: list[np.ndarray]
    source: str = ""

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_arcs(self) -> int:
        return sum(len(p) for p in self.parents)

    @property
    def cardinalities(self) -> np.ndarray:
        """Number of states per node ``[T]``."""
        return np.array([len(s) for s in self.states], dtype=np.int64)

    @property
    def adjacency(self) -> np.ndarray:
        """``[T, T]`` 0/1 array, ``A[parent, child] = 1``."""
        a = np.zeros((self.n_nodes, self.n_nodes), dtype=np.int64)
        for j, pa in enumerate(self.parents):
            a[pa, j] = 1
        return a

    @property
    def roots(self) -> list[int]:
        """Nodes without parents."""
        return [j for j, pa in enumerate(self.parents) if not pa]

    def topological_order(self) -> list[int]:
        """A topological order (networkx; ties broken by file order)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(range(self.n_nodes))
        g.add_edges_from((p, j) for j, pa in enumerate(self.parents) for p in pa)
        return list(nx.lexicographical_topological_sort(g))

    def sample(self, n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
        """``n`` observational rows of state indices ``[n, T]`` (int64), by forward sampling."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return _forward_sample(self, [self.cpts], np.zeros(n, dtype=np.int64),
                               rng.random((n, self.n_nodes)))

    def __repr__(self) -> str:
        return (f"BayesianNetwork(name={self.name!r}, nodes={self.n_nodes}, "
                f"arcs={self.n_arcs}, max_states={int(self.cardinalities.max())})")


# ---------------------------------------------------------------------------- BIF tokens
_TOKEN = re.compile(
    r"""(?P<nl>\n)
      | [^\S\n]+
      | //[^\n]*
      | (?P<bcomment>/\*.*?\*/)
      | (?P<string>"[^"\n]*")
      | (?P<punct>[{}()\[\],;|])
      | (?P<word>(?!/\*)[^\s{}()\[\],;|"]+)
      | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class _Tokens:
    """A token stream ``(kind, text, line)`` with errors that name the file and the line."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.items: list[tuple[str, str, int]] = []
        line = 1
        append = self.items.append
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            if kind is None:  # whitespace or a // comment
                continue
            if kind == "word" or kind == "punct":
                append((kind, m.group(), line))
            elif kind == "nl":
                line += 1
            elif kind == "string":
                append((kind, m.group()[1:-1], line))
            elif kind == "bcomment":
                line += m.group().count("\n")
            else:
                pos = m.start()
                snippet = text[pos:pos + 20].split("\n")[0]
                what = ("an unterminated /* comment" if text.startswith("/*", pos)
                        else "an unterminated string" if text[pos] == '"'
                        else f"an unexpected character {text[pos]!r}")
                raise self.error(line, f"bad token: {what} at {snippet!r}")
        self.pos = 0
        self.last_line = line

    def error(self, line: int, message: str) -> DataFileError:
        return DataFileError(f"{self.source}: line {line}: {message}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next(self, expected: str = "more input") -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise self.error(self.last_line, f"unexpected end of file; expected {expected}")
        self.pos += 1
        return tok

    def expect(self, text: str) -> int:
        kind, value, line = self.next(repr(text))
        if value != text or kind == "string":
            raise self.error(line, f"bad token {value!r}; expected {text!r}")
        return line

    def word(self, what: str) -> tuple[str, int]:
        kind, value, line = self.next(what)
        if kind not in ("word", "string"):
            raise self.error(line, f"bad token {value!r}; expected {what}")
        return value, line

    def skip_statement(self) -> None:
        """Skip to the next ``;`` (``property ...;`` lines carry nothing we use)."""
        while True:
            _, value, line = self.next("';' ending the property")
            if value == ";":
                return
            if value in "{}":
                raise self.error(line, f"bad token {value!r} inside a property; missing ';'?")


@dataclass
class _Probability:
    child: str
    parents: list[str]
    line: int
    table: tuple[list[float], int] | None = None
    default: tuple[list[float], int] | None = None
    rows: list[tuple[list[str], list[float], int]] | None = None


def _numbers(tok: _Tokens) -> list[float]:
    """Comma-separated probabilities up to (and eating) the ``;``."""
    values: list[float] = []
    items, pos = tok.items, tok.pos
    while pos < len(items):
        kind, value, line = items[pos]
        pos += 1
        if kind == "punct":
            if value == ";":
                tok.pos = pos
                return values
            if value == ",":
                continue
        try:
            p = float(value) if kind == "word" else math.nan
        except ValueError:
            p = math.nan
        if not math.isfinite(p):
            raise tok.error(line, f"bad token {value!r}; expected a probability")
        if p < 0:
            raise tok.error(line, f"negative probability {value}")
        values.append(p)
    raise tok.error(tok.last_line, "unexpected end of file; expected a probability or ';'")


def _names_until(tok: _Tokens, end: str, what: str) -> list[tuple[str, int]]:
    """Names separated by optional commas, up to (and eating) ``end``."""
    out: list[tuple[str, int]] = []
    while True:
        kind, value, line = tok.next(f"{what} or {end!r}")
        if kind == "punct" and value == end:
            return out
        if kind == "punct" and value == ",":
            continue
        if kind == "punct":
            raise tok.error(line, f"bad token {value!r}; expected {what} or {end!r}")
        out.append((value, line))


def _parse_variable(tok: _Tokens, variables: dict[str, tuple[list[str], int]]) -> None:
    name, line = tok.word("a variable name")
    if name in variables:
        raise tok.error(line, f"variable {name!r} declared twice (first on line "
                              f"{variables[name][1]})")
    tok.expect("{")
    states: list[str] | None = None
    while True:
        _, value, vline = tok.next("'type', 'property' or '}'")
        if value == "}":
            break
        if value == "property":
            tok.skip_statement()
            continue
        if value != "type":
            raise tok.error(vline, f"bad token {value!r} in variable {name!r}; expected 'type', "
                                   "'property' or '}'")
        kind, _ = tok.word("'discrete'")
        if kind != "discrete":
            raise tok.error(vline, f"variable {name!r}: only discrete variables are read, got "
                                   f"type {kind!r}")
        tok.expect("[")
        count, cline = tok.word("the number of states")
        if not count.isdigit():
            raise tok.error(cline, f"bad token {count!r}; expected the number of states")
        tok.expect("]")
        tok.expect("{")
        found = _names_until(tok, "}", "a state name")
        tok.expect(";")
        states = [s for s, _ in found]
        if len(states) != int(count):
            raise tok.error(cline, f"variable {name!r} declares {count} states but lists "
                                   f"{len(states)}: {states}")
        dupes = sorted({s for s in states if states.count(s) > 1})
        if dupes:
            raise tok.error(cline, f"variable {name!r}: duplicate state names {dupes}")
    if states is None:
        raise tok.error(line, f"variable {name!r} has no 'type discrete [ k ] {{ ... }};' line")
    variables[name] = (states, line)


def _parse_probability(tok: _Tokens, line: int) -> _Probability:
    tok.expect("(")
    child, _ = tok.word("the variable name")
    parents: list[str] = []
    kind, value, pline = tok.next("'|', a parent or ')'")
    if value == "|" and kind == "punct":
        parents = [p for p, _ in _names_until(tok, ")", "a parent name")]
    elif value != ")" or kind != "punct":  # old BIF: probability ( X P1 P2 )
        tok.pos -= 1
        parents = [p for p, _ in _names_until(tok, ")", "a parent name")]
    block = _Probability(child, parents, line, rows=[])
    tok.expect("{")
    while True:
        kind, value, eline = tok.next("'table', '(' or '}'")
        if kind == "punct" and value == "}":
            return block
        if kind == "punct" and value == "(":
            key = [v for v, _ in _names_until(tok, ")", "a parent state")]
            block.rows.append((key, _numbers(tok), eline))  # type: ignore[union-attr]
        elif kind == "word" and value == "table":
            if block.table is not None:
                raise tok.error(eline, f"probability ( {child} ): a second 'table' line")
            block.table = (_numbers(tok), eline)
        elif kind == "word" and value == "default":
            block.default = (_numbers(tok), eline)
        elif kind == "word" and value == "property":
            tok.skip_statement()
        else:
            raise tok.error(eline, f"bad token {value!r} in probability ( {child} ); expected "
                                   "'table', '(' or '}'")


def _check_row(tok: _Tokens, values: list[float], k: int, child: str, line: int,
               where: str) -> np.ndarray:
    if len(values) != k:
        raise tok.error(line, f"probability ( {child} ){where}: wrong row length: expected {k} "
                              f"probabilities (one per state of {child!r}), got {len(values)}")
    total = math.fsum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise tok.error(line, f"probability ( {child} ){where}: the row sums to {total:.6g}, "
                              f"not 1 (tolerance {SUM_TOLERANCE:g})")
    return np.asarray(values, dtype=np.float64) / total


def _build_cpt(tok: _Tokens, block: _Probability, states: dict[str, list[str]],
               parents: list[str]) -> np.ndarray:
    child = block.child
    k = len(states[child])
    if block.table is not None and block.rows:
        raise tok.error(block.table[1], f"probability ( {child} ): both a 'table' line and "
                                        "parent-state rows")
    if block.table is not None:
        values, line = block.table
        if parents:
            raise tok.error(line, f"probability ( {child} | ... ): a flat 'table' is read only "
                                  "for a node without parents; write one '(parent states) p, "
                                  "...;' row per parent configuration")
        return _check_row(tok, values, k, child, line, "")[None, :]
    cards = [len(states[p]) for p in parents]
    n_conf = int(np.prod(cards)) if parents else 1
    strides = [int(np.prod(cards[i + 1:])) for i in range(len(cards))]  # first most significant
    lookup = [{s: i for i, s in enumerate(states[p])} for p in parents]
    cpt = np.full((n_conf, k), np.nan)
    seen: dict[int, int] = {}
    for key, values, line in block.rows or []:
        if len(key) != len(parents):
            raise tok.error(line, f"probability ( {child} ) row ({', '.join(key)}): {len(key)} "
                                  f"parent states for {len(parents)} parents {parents}")
        c = 0
        for p, s, table, stride in zip(parents, key, lookup, strides):
            if s not in table:
                raise tok.error(line, f"probability ( {child} ) row ({', '.join(key)}): unknown "
                                      f"state {s!r} of parent {p!r} (states: {states[p]})")
            c += table[s] * stride
        where = f" row ({', '.join(key)})"
        if c in seen:
            raise tok.error(line, f"probability ( {child} ){where}: duplicate row (first on "
                                  f"line {seen[c]})")
        seen[c] = line
        cpt[c] = _check_row(tok, values, k, child, line, where)
    missing = np.flatnonzero(np.isnan(cpt[:, 0]))
    if missing.size and block.default is not None:
        values, line = block.default
        cpt[missing] = _check_row(tok, values, k, child, line, " default")
    elif missing.size:
        example = np.unravel_index(int(missing[0]), cards) if parents else ()
        names = ", ".join(states[p][int(s)] for p, s in zip(parents, example))
        raise tok.error(block.line, f"probability ( {child} ): missing rows: {missing.size} of "
                                    f"{n_conf} parent configurations have no probabilities, "
                                    f"e.g. ({names})")
    return cpt


def _parse_bif(text: str, source: str, default_name: str) -> BayesianNetwork:
    tok = _Tokens(text, source)
    name = default_name
    variables: dict[str, tuple[list[str], int]] = {}
    blocks: dict[str, _Probability] = {}
    while tok.peek() is not None:
        kind, value, line = tok.next()
        if kind == "punct" and value == ";":
            continue
        if kind == "word" and value == "network":
            nkind, nvalue, _ = tok.next("the network name or '{'")
            if nvalue != "{" or nkind != "punct":
                if nvalue.lower() not in ("unknown", ""):
                    name = nvalue
                tok.expect("{")
            while True:
                _, v, vline = tok.next("'property' or '}'")
                if v == "}":
                    break
                if v != "property":
                    raise tok.error(vline, f"bad token {v!r} in the network block; expected "
                                           "'property' or '}'")
                tok.skip_statement()
        elif kind == "word" and value == "variable":
            _parse_variable(tok, variables)
        elif kind == "word" and value == "probability":
            block = _parse_probability(tok, line)
            if block.child in blocks:
                raise tok.error(line, f"a second probability block for {block.child!r} (first "
                                      f"on line {blocks[block.child].line})")
            blocks[block.child] = block
        else:
            raise tok.error(line, f"bad token {value!r}; expected 'network', 'variable' or "
                                  "'probability'")
    if not variables:
        raise tok.error(tok.last_line, "no variables declared")
    nodes = list(variables)
    index = {n: i for i, n in enumerate(nodes)}
    states = {n: s for n, (s, _) in variables.items()}
    parents: list[list[int]] = []
    cpts: list[np.ndarray] = []
    for child, block in blocks.items():
        if child not in index:
            raise tok.error(block.line, f"probability ( {child} ): unknown variable {child!r}")
        for p in block.parents:
            if p not in index:
                raise tok.error(block.line, f"probability ( {child} | ... ): unknown parent "
                                            f"{p!r}")
            if p == child:
                raise tok.error(block.line, f"probability ( {child} ): {child!r} is its own "
                                            "parent")
        dupes = sorted({p for p in block.parents if block.parents.count(p) > 1})
        if dupes:
            raise tok.error(block.line, f"probability ( {child} ): parents {dupes} listed twice")
    for child in nodes:
        if child not in blocks:
            raise tok.error(variables[child][1], f"variable {child!r} has no probability block")
        block = blocks[child]
        parents.append([index[p] for p in block.parents])
        cpts.append(_build_cpt(tok, block, states, block.parents))
    net = BayesianNetwork(name, nodes, [states[n] for n in nodes], parents, cpts, source)
    _check_acyclic(tok, net, blocks)
    return net


def _check_acyclic(tok: _Tokens, net: BayesianNetwork, blocks: dict[str, _Probability]) -> None:
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(range(net.n_nodes))
    g.add_edges_from((p, j) for j, pa in enumerate(net.parents) for p in pa)
    if nx.is_directed_acyclic_graph(g):
        return
    cycle = nx.find_cycle(g)
    path = " -> ".join([net.nodes[cycle[0][0]]] + [net.nodes[v] for _, v in cycle])
    closing = net.nodes[cycle[-1][1]]
    raise tok.error(blocks[closing].line, f"the parents form a cycle: {path}")


# ---------------------------------------------------------------------------- reading files
def _models_dir() -> Path | None:
    root = _files.package_dir("pgmpy")  # looked up at call time (tests patch it)
    if root is None:
        return None
    d = root.joinpath(*_PGMPY_MODELS)
    return d if d.is_dir() else None


def bundled_networks() -> list[str]:
    """Names of the networks bundled with the installed pgmpy wheel (empty when absent)."""
    d = _models_dir()
    if d is None:
        return []
    return sorted(p.name[: -len(".bif.gz")] for p in d.glob("*.bif.gz"))


def _missing_pgmpy() -> str | None:
    """Why the bundled networks cannot be read (an install hint), or ``None``."""
    d = _models_dir()
    if d is None or not (d / "asia.bif.gz").is_file():
        return f"bnlearn's networks (pgmpy 0.1.26's example_models) not installed: {BIF_INSTALL}"
    return None


def _locate(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """The file to read and the default network name (the file name without its suffixes)."""
    if isinstance(name_or_path, str) and name_or_path and not Path(name_or_path).is_file() and (
        "/" not in name_or_path and os.sep not in name_or_path
        and not name_or_path.endswith((".bif", ".gz"))
    ):
        d = _models_dir()
        if d is None:
            raise MissingDependencyError(
                f"name_or_path: the network {name_or_path!r} is read from the BIF files bundled "
                f"with pgmpy 0.1.26, and the 'pgmpy' package is not installed: install it with "
                f"{BIF_INSTALL} (only its data files are read), or pass the path of a .bif / "
                ".bif.gz file"
            )
        path = d / f"{name_or_path}.bif.gz"
        if not path.is_file():
            raise ValidationError(
                f"name_or_path: no bundled network {name_or_path!r}; bundled: "
                f"{bundled_networks()} (or pass the path of a .bif / .bif.gz file)"
            )
        return path, name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValidationError(f"name_or_path: expected a network name or a file path, got "
                              f"{name_or_path!r}")
    path = Path(name_or_path)
    if not path.is_file():
        raise DataFileError(f"name_or_path: no such file {str(path)!r}")
    stem = path.name
    for suffix in (".gz", ".bif"):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    return path, stem


def read_bif(name_or_path: str | os.PathLike) -> BayesianNetwork:
    """Parse a BIF file (``.bif`` or gzip-compressed ``.bif.gz``) or a bundled network.

    Args:
        name_or_path (str or path): a file path, or the name of a network bundled with
            pgmpy 0.1.26 (``"asia"``, ``"sachs"``, ``"child"``, ``"insurance"``, ``"alarm"``,
            ... : :func:`bundled_networks`).

    Returns:
        BayesianNetwork: nodes in file order, their states, parents and CPTs.

    Raises:
        MissingDependencyError: a bundled name while pgmpy's wheel is not installed.
        DataFileError: a missing or malformed file; the message names the file and the line
            (bad token, wrong row length, a row that does not sum to 1, unknown parent or
            state, missing or duplicate rows, a cycle, ...).
        ValidationError: an unknown bundled name.
    """
    path, default_name = _locate(name_or_path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataFileError(f"{path}: cannot read the file: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return _parse_bif(text, str(path), default_name)


# ---------------------------------------------------------------------------- sampling
def _forward_sample(net: BayesianNetwork, cpt_sets: Sequence[Sequence[np.ndarray]],
                    env: np.ndarray, u: np.ndarray, do: np.ndarray | None = None,
                    do_state: np.ndarray | None = None) -> np.ndarray:
    """Forward sampling in topological order, vectorised over rows.

    Per node, the rows' parent configurations index that node's cumulative CPT (of the row's
    environment, ``cpt_sets[env[row]]``) and the state is the inverse CDF at ``u[row, node]``.
    Where ``do[row, node]`` the sampled state is replaced by ``do_state[row, node]`` before the
    node's children are drawn.
    """
    n, t = u.shape
    y = np.zeros((n, t), dtype=np.int64)
    cards = net.cardinalities
    for j in net.topological_order():
        pa = net.parents[j]
        if pa:
            strides = np.cumprod([1] + [int(cards[p]) for p in pa[:0:-1]])[::-1]
            conf = y[:, pa] @ strides
        else:
            conf = np.zeros(n, dtype=np.int64)
        cdf = np.stack([np.cumsum(cpts[j], axis=1) for cpts in cpt_sets])  # [E, C, K]
        cdf[..., -1] = 1.0  # rounding: u < 1 always falls inside the last state
        state = (u[:, j, None] >= cdf[env, conf]).sum(axis=1)
        state = np.minimum(state, cards[j] - 1)
        if do is not None and do_state is not None:
            state = np.where(do[:, j], do_state[:, j], state)
        y[:, j] = state
    return y
