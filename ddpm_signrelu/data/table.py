"""Mixed-type tables as vectors diffusion can model, and back (docs/credit_default.md): CSV files and the codec.

A table is a dict of columns in file order: float64 arrays of numbers, or str arrays of labels as in the file."""

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ddpm_signrelu.data.relations import related_values, relation_states
from ddpm_signrelu.errors import ConfigError, DataError, check_choice

Encoding = Literal["onehot", "ordinal"]
ENCODINGS = ("onehot", "ordinal")
Missing = Literal["refuse", "category"]
MISSINGS = ("refuse", "category")
MISSING_CELLS = ["", "na", "n/a", "nan", "null", "none", "?"]  # compared in lower case
Table = dict[str, np.ndarray]


@dataclass
class Column:
    """One column: numerical (``integer``: whole numbers only; its exact ``relations``, :mod:`.relations`; the
    column it ``follows`` in a sequence) or categorical (its ``categories``, in order, and the training rows'
    ``counts`` of each)."""

    name: str
    kind: Literal["numerical", "categorical"]
    integer: bool = False
    categories: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    follows: str | None = None
    counts: list[int] = field(default_factory=list)

    @property
    def states(self) -> list[str]:
        """The labels of a related column's state block: ``free``, then its relations."""
        return ["free", *self.relations] if self.relations else []


def read_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(header, cells): the header's column names and the cells as a (rows, columns) array of str."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"table not found: {path}; point data.init_args.path (or root) at the CSV file")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{path} holds no data rows: a CSV with a header line and one row per record is needed")
    header = [h.strip() for h in rows[0]]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"{path} names column(s) {twice} more than once; give each column one name")
    short = next((i for i, r in enumerate(rows[1:], 2) if len(r) != len(header)), None)
    if short is not None:
        raise DataError(f"{path} line {short} has {len(rows[short - 1])} fields but the header has {len(header)}; "
                        f"fix that line")
    return header, np.array(rows[1:], dtype=str)


def parse_table(path: str | Path, header: list[str], cells: np.ndarray, numerical: list[str],
                categorical: dict[str, list[str] | None], missing: Missing = "refuse") -> Table:
    """The columns the spec names, in the file's order, checked (present, numbers, listed labels). A cell that
    reads as missing (:data:`MISSING_CELLS`) is refused, or under ``missing="category"`` in a categorical column
    becomes the label ``""`` (an empty cell when written back)."""
    check_choice("missing", missing, MISSINGS)
    both = sorted(set(numerical) & set(categorical))
    if both:
        raise ConfigError(f"column(s) {both} are listed as both numerical and categorical; list each once")
    absent = [c for c in [*numerical, *categorical] if c not in header]
    if absent:
        raise DataError(f"{path} lacks column(s) {absent} that the column spec names; its columns are {header}")
    table: Table = {}
    for name in [h for h in header if h in numerical or h in categorical]:
        values = np.char.strip(cells[:, header.index(name)])
        gaps = np.flatnonzero(np.isin(np.char.lower(values), MISSING_CELLS))
        if len(gaps) and (missing == "refuse" or name in numerical):
            fix = "or set missing: category (a label of their own)" if name in categorical else "(a numerical column)"
            raise DataError(f"{path}: column {name} is missing a value on line {gaps[0] + 2} "
                            f"({str(values[gaps[0]])!r}, {len(gaps)} missing cells); fill or drop those rows {fix}")
        if name in categorical:
            values[gaps] = ""
            allowed = categorical[name]
            unseen = sorted(set(values.tolist()) - set(allowed) - {""}) if allowed is not None else []
            if unseen:
                raise DataError(f"{path}: categorical column {name} holds {unseen[:5]} not among its categories "
                                f"{allowed}; add them to the column spec's categories")
            table[name] = values
        else:
            table[name] = _numbers(path, name, values)
    return table


def _numbers(path, name: str, values: np.ndarray) -> np.ndarray:
    try:
        numbers = values.astype(np.float64)
    except ValueError:
        bad = next(i for i, v in enumerate(values) if not is_number(v))
        raise DataError(f"{path}: numerical column {name} holds {str(values[bad])!r} on line {bad + 2}, not a number; "
                        f"fix the value or list {name} as categorical") from None
    if not np.isfinite(numbers).all():
        bad = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise DataError(f"{path}: numerical column {name} holds {str(values[bad])!r} on line {bad + 2}; only finite "
                        f"numbers can be modelled")
    return numbers


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_csv(table: Table, path: str | Path, columns: list[Column]) -> None:
    """``table`` as a CSV with the columns in ``columns``' order, integer columns as whole numbers."""
    text = {c.name: (table[c.name].astype(np.int64).astype(str) if c.integer
                     else table[c.name].astype(str) if c.kind == "numerical" else table[c.name]) for c in columns}
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([c.name for c in columns])
        writer.writerows(zip(*(text[c.name] for c in columns)))


def take(table: Table, rows: np.ndarray) -> Table:
    return {name: values[rows] for name, values in table.items()}


class TableCodec:
    """The fitted map between a table's rows and float32 vectors of width :attr:`width`; :meth:`state_dict` (plain
    lists and tensors, carried by a tabular run's checkpoint) rebuilds it with :meth:`from_state`.

    A vector holds the modelled columns' normal scores (for a column that ``follows`` another, the score of the
    change of its score from that column's), each categorical column's one-hot block, each related column's state
    block."""

    def __init__(self, columns: list[Column], quantiles: torch.Tensor, references: torch.Tensor,
                 encoding: Encoding = "onehot", changes: torch.Tensor | None = None):
        check_choice("categorical encoding", encoding, ENCODINGS)
        self.columns, self.encoding = columns, encoding
        self.quantiles, self.references = quantiles.double(), references.double()  # (Q, modelled), (Q,)
        self.changes = quantiles.new_zeros(len(references), 0) if changes is None else changes.double()  # (Q, follows)

    @classmethod
    def fit(cls, table: Table, categories: dict[str, list[str]], encoding: Encoding = "onehot",
            n_quantiles: int = 1000, seed: int = 0, relations: dict[str, list[str]] | None = None,
            follows: dict[str, str] | None = None) -> "TableCodec":
        """Fit on the training rows ``table``; ``categories``: each categorical column's labels, in order;
        ``relations``: {numerical column: its relations}; ``follows``: {numerical column: the one before it}."""
        relations, follows = relations or {}, follows or {}
        columns = [Column(name, "categorical", categories=list(categories[name]),
                          counts=[int(np.sum(values == label)) for label in categories[name]]) if name in categories
                   else Column(name, "numerical", bool(np.all(values == np.round(values))),
                               relations=list(relations.get(name, [])), follows=follows.get(name))
                   for name, values in table.items()]
        codec = cls(columns, torch.zeros(0, 0), torch.zeros(0), encoding)
        numbers = codec._numerical_matrix(table)
        if numbers.shape[1]:
            codec.quantiles, codec.references = _quantiles(codec._off_masses(numbers), n_quantiles, seed)
            codec.changes = codec.references.new_zeros(len(codec.references), 0)
            if follows:
                codec.changes = _quantiles(codec._changes(codec._scores(numbers)), n_quantiles, seed)[0]
        return codec

    def column(self, name: str) -> Column:
        if (found := next((c for c in self.columns if c.name == name), None)) is None:
            raise ConfigError(f"the table has no column {name!r}; its columns are {[c.name for c in self.columns]}")
        return found

    @property
    def modelled(self) -> list[Column]:
        """The columns the quantile transform sees: the numerical ones, and the categorical ones under ``ordinal``."""
        return [c for c in self.columns if c.kind == "numerical" or self.encoding == "ordinal"]

    @property
    def blocks(self) -> list[tuple[Column, list[str]]]:
        """The one-hot blocks in vector order: (column, labels) for the categories, then for the states."""
        return [(c, c.categories) for c in self.columns if c.kind == "categorical" and self.encoding == "onehot"] + \
            [(c, c.states) for c in self.columns if c.relations]

    @property
    def width(self) -> int:
        """The vector's width D: one coordinate per modelled column, plus one per label of each one-hot block."""
        return len(self.modelled) + sum(len(labels) for _, labels in self.blocks)

    def masses(self, column: Column) -> list[float]:
        """The point masses among ``column``'s relations (the others name columns)."""
        names = {c.name for c in self.columns}
        return [float(r) for r in column.relations if r not in names]

    def _off_masses(self, numbers: np.ndarray) -> np.ndarray:
        """``numbers`` with each column's cells at its point masses as NaN, which its quantiles leave out: the
        free rows' scores then have no gap for the masses to fill, and a free score decodes onto a mass no more
        often than onto a value beside it (the state sets the masses). A column with fewer than 2 other values keeps
        them all."""
        numbers = numbers.copy()
        for j, column in enumerate(self.modelled):
            at_mass = np.isin(numbers[:, j], self.masses(column))
            if np.count_nonzero(~at_mass) >= 2:
                numbers[at_mass, j] = np.nan
        return numbers

    def _numerical_matrix(self, table: Table) -> np.ndarray:
        """(N, modelled columns) float64: numbers, and category indices under ``ordinal``."""
        return _stack([table[c.name] if c.kind == "numerical" else _indices(c.name, c.categories, table[c.name])
                       for c in self.modelled], len(next(iter(table.values())))).astype(np.float64)

    def scores(self, table: Table) -> np.ndarray:
        """(N, modelled) float64: the modelled columns' normal scores (a sequence's, not their changes)."""
        return self._scores(self._numerical_matrix(table))

    def _scores(self, numbers: np.ndarray) -> np.ndarray:
        return ndtri(_stack([_forward(numbers[:, j], self.quantiles[:, j], self.references)
                             for j in range(numbers.shape[1])], len(numbers)))

    def _changes(self, scores: np.ndarray) -> np.ndarray:
        """(N, follows) each following column's score minus the score of the column it follows."""
        index = {c.name: j for j, c in enumerate(self.modelled)}
        return _stack([scores[:, index[c.name]] - scores[:, index[c.follows]] for c in self.modelled if c.follows],
                      len(scores))

    def encode(self, table: Table) -> torch.Tensor:
        """Rows (N, D) float32, as the class docstring lays them out."""
        scores = self.scores(table)
        following = [j for j, c in enumerate(self.modelled) if c.follows]
        changes = self._changes(scores)
        for k, j in enumerate(following):
            scores[:, j] = ndtri(_forward(changes[:, k], self.changes[:, k], self.references))
        parts = [torch.from_numpy(scores)]
        for column, labels in self.blocks:
            index = relation_states(table, column.name, column.relations) if column.relations else \
                _indices(column.name, labels, table[column.name])
            parts.append(torch.nn.functional.one_hot(torch.from_numpy(index), len(labels)).double())
        return torch.cat(parts, 1).float()

    def decode(self, x: torch.Tensor) -> Table:
        """The table of rows ``x`` (N, D), columns in their original order; refuses another width. A related
        column's state restores its relation exactly, unless an equality would set a value outside the column's
        training range (a payment equal to a negative statement): then the column's own value stays."""
        if x.dim() != 2 or x.shape[1] != self.width:
            raise ConfigError(f"rows of width {self.width} decode to this table, got shape {tuple(x.shape)}")
        x = x.detach().double().cpu().numpy()
        chosen, offset = {}, len(self.modelled)  # each block's label index
        for column, labels in self.blocks:
            chosen[column.name] = x[:, offset:offset + len(labels)].argmax(1)
            offset += len(labels)
        table, scores, following = {}, {}, 0
        for j, column in enumerate(self.modelled):
            z = x[:, j]
            if column.follows:
                z = scores[column.follows] + _inverse(ndtr(z), self.changes[:, following], self.references)
                following += 1
            values = _inverse(ndtr(z), self.quantiles[:, j], self.references)
            if column.kind == "categorical":
                table[column.name] = np.array(column.categories)[np.clip(np.round(values), 0,
                                                                         len(column.categories) - 1).astype(np.int64)]
                continue
            values = np.round(values) if column.integer else values
            masses = self.masses(column)
            low, high = min([self.quantiles[0, j].item(), *masses]), max([self.quantiles[-1, j].item(), *masses])
            for k, relation in enumerate(column.relations, 1):
                related = related_values(table, relation)  # out of the column's range (a negative bill as a payment):
                holds = (chosen[column.name] == k) & (related >= low) & (related <= high)  # its own value stays
                values = np.where(holds, related, values)
            table[column.name] = values
            scores[column.name] = ndtri(_forward(values, self.quantiles[:, j], self.references))
        for column in self.columns:
            if column.kind == "categorical" and column.name in chosen:
                table[column.name] = np.array(column.categories)[chosen[column.name]]
        return {c.name: table[c.name] for c in self.columns}

    def state_dict(self) -> dict:
        return {"columns": [asdict(c) for c in self.columns], "quantiles": self.quantiles,
                "references": self.references, "encoding": self.encoding, "changes": self.changes}

    @classmethod
    def from_state(cls, state: dict) -> "TableCodec":
        return cls([Column(**c) for c in state["columns"]], state["quantiles"], state["references"],
                   state["encoding"], state.get("changes"))


def _stack(columns: list[np.ndarray], rows: int) -> np.ndarray:
    """(rows, len(columns)): the columns side by side."""
    return np.stack(columns, 1) if columns else np.zeros((rows, 0))


def _quantiles(matrix: np.ndarray, n_quantiles: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantiles (Q, columns) of each column of ``matrix`` and their levels (Q,)."""
    from sklearn.preprocessing import QuantileTransformer

    transform = QuantileTransformer(n_quantiles=min(n_quantiles, len(matrix)), output_distribution="normal",
                                    subsample=10**9, random_state=seed).fit(matrix)
    return torch.from_numpy(transform.quantiles_).double(), torch.from_numpy(transform.references_).double()


def _forward(x: np.ndarray, quantiles: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """The empirical CDF through the quantiles, ties at the middle of their range (docs/credit_default.md)."""
    q, r = quantiles.numpy(), references.numpy()
    return 0.5 * (np.interp(x, q, r) - np.interp(-x, -q[::-1], -r[::-1]))


def _inverse(u: np.ndarray, quantiles: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """The quantile function: ``u`` within 2e-7 of an end (a clipped score, ±5.2 in float32) is that end."""
    u = np.where(u < 2e-7, 0.0, np.where(u > 1 - 2e-7, 1.0, u))
    return np.interp(u, references.numpy(), quantiles.numpy())


def ndtri(u: np.ndarray) -> np.ndarray:
    """Normal scores of CDF values, clipped to [1e-7, 1 - 1e-7] (scores within ±5.2)."""
    return torch.special.ndtri(torch.from_numpy(np.clip(u, 1e-7, 1 - 1e-7))).numpy()


def ndtr(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.from_numpy(z)).numpy()


def _indices(name: str, categories: list[str], labels: np.ndarray) -> np.ndarray:
    index = {label: k for k, label in enumerate(categories)}
    if unseen := sorted(set(labels.tolist()) - index.keys()):
        raise DataError(f"categorical column {name} holds {unseen[:5]}, not among the categories {categories} it "
                        f"was fitted with; add them to the column spec's categories")
    return np.array([index[v] for v in labels.tolist()], dtype=np.int64)


def stratified(table: Table, column: Column, rows: int) -> Table:
    """``rows`` rows of ``table``, the first in order of each label of the categorical ``column``, as many of each
    as its share of the training rows (``column.counts``; largest remainders) gives."""
    if not column.counts:
        raise ConfigError(f"{column.name} has no training label counts (not categorical, or a checkpoint from before "
                          f"they were kept): sample without stratifying")
    share = np.array(column.counts) / sum(column.counts) * rows
    quota = np.floor(share).astype(np.int64)
    quota[np.argsort(quota - share)[:rows - quota.sum()]] += 1
    keep = []
    for label, count in zip(column.categories, quota):
        if len(found := np.flatnonzero(table[column.name] == label)) < count:
            raise DataError(f"only {len(found)} of the {len(table[column.name])} rows drawn have {column.name} = "
                            f"{label!r} and {count} are needed; draw more (raise --oversample)")
        keep.append(found[:count])
    return take(table, np.sort(np.concatenate(keep)))


def sorted_labels(values: np.ndarray) -> list[str]:
    """The distinct labels of ``values``: numbers in numerical order, then the others in text order."""
    def order(label: str):
        return (0, float(label), "") if is_number(label) and math.isfinite(float(label)) else (1, 0.0, label)

    return sorted(set(values.tolist()), key=order)
