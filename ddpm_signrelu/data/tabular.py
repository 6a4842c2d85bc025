"""Tabular data modules: any mixed-type CSV through :class:`~ddpm_signrelu.data.table.TableCodec`, Credit Default."""

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ddpm_signrelu.data.base import TensorDataModule
from ddpm_signrelu.data.relations import discover_relations
from ddpm_signrelu.data.table import (ENCODINGS, Encoding, Missing, Table, TableCodec, is_number, parse_table,
                                      read_csv, sorted_labels, take)
from ddpm_signrelu.errors import ConfigError, DataError, check_choice


class TabularDataModule(TensorDataModule):
    """Rows of the CSV file ``path`` as float32 vectors, split once by ``seed`` into ``test_size`` test rows (never
    served: :meth:`tables` gives them to evaluations), ``val_size`` held-out rows and the training rows the codec is
    fitted on (``n_quantiles``). ``numerical``: column names; ``categorical``: column names, or a mapping name ->
    its labels (others are refused) or None (the labels found in the file); other columns are ignored. ``encoding``:
    ``onehot`` or ``ordinal`` categories; ``missing``: ``refuse`` empty or NA cells, or model them in categorical
    columns as a ``category`` of their own. Exact relations of numerical columns (:mod:`.relations`): ``relations``
    names them ({column: [a number, or an earlier numerical column, ...]}), and for the other numerical columns
    those holding on at least ``relation_share`` of the training rows are found (None: none); ``sequences``: lists
    of numerical columns in file order, each after the first modelled as the change from the one before
    (docs/credit_default.md)."""

    num_levels = None

    def __init__(self, path: str, numerical: list[str], categorical: list[str] | dict[str, list[str] | None],
                 encoding: Encoding = "onehot", n_quantiles: int = 1000, batch_size: int = 1024,
                 val_size: int = 3000, test_size: int = 6000, seed: int = 0, num_workers: int = 0,
                 missing: Missing = "refuse", relations: dict[str, list[str | float]] | None = None,
                 relation_share: float | None = 0.03, sequences: list[list[str]] | None = None):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        check_choice("categorical encoding", encoding, ENCODINGS)
        if test_size < 1 or n_quantiles < 2:
            raise ConfigError(f"need test_size >= 1 and n_quantiles >= 2, got {test_size}, {n_quantiles}")
        if isinstance(categorical, (list, tuple)):
            categorical = {name: None for name in categorical}
        self.path, self.numerical, self.categorical = Path(path), list(numerical), dict(categorical)
        self.encoding, self.n_quantiles, self.test_size, self.missing = encoding, n_quantiles, test_size, missing
        if relation_share is not None and not 0 < relation_share < 1:
            raise ConfigError(f"relation_share is a share of the rows in (0, 1) or null (none), got {relation_share}")
        self.relations = {name: [str(r) for r in targets] for name, targets in (relations or {}).items()}
        check_relations(self.relations, self.numerical)
        self.relation_share, self.follows = relation_share, check_sequences(sequences or [], self.numerical)

    @cached_property
    def _split(self) -> tuple[dict[str, Table], TableCodec]:
        header, cells = read_csv(self.path)
        table = parse_table(self.path, header, cells, self.numerical, self.categorical, self.missing)
        rows = len(cells)
        if self.val_size + self.test_size >= rows:
            raise ConfigError(f"val_size ({self.val_size}) + test_size ({self.test_size}) leave no training rows "
                              f"of the {rows} in {self.path}; lower them")
        perm = torch.randperm(rows, generator=torch.Generator().manual_seed(self.seed)).numpy()
        test, val, train = np.split(perm, [self.test_size, self.test_size + self.val_size])
        categories = {name: sorted_labels(table[name]) if labels is None else labels + [""] * ("" in table[name])
                      for name, labels in self.categorical.items()}  # "": missing cells, where modelled
        tables = {"train": take(table, train), "val": take(table, val), "test": take(table, test)}
        numerical = [name for name in table if name in self.numerical]
        found = discover_relations(tables["train"], numerical, self.relation_share) if self.relation_share else {}
        return tables, TableCodec.fit(tables["train"], categories, self.encoding, self.n_quantiles, self.seed,
                                      found | self.relations, self.follows)

    def tables(self) -> dict[str, Table]:
        """The raw ``train``, ``val`` and ``test`` rows, columns as in :mod:`~ddpm_signrelu.data.table`."""
        return self._split[0]

    @property
    def codec(self) -> TableCodec:
        return self._split[1]

    @property
    def data_shape(self) -> tuple[int]:
        return (self.codec.width,)

    def load_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        tables = self.tables()
        return self.codec.encode(tables["train"]), self.codec.encode(tables["val"])

    def state_dict(self) -> dict:
        return {"table_codec": self.codec.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Resuming: refuse a checkpoint whose codec is not the one this file and split give."""
        saved = TableCodec.from_state(state["table_codec"])
        if saved.columns != self.codec.columns or saved.encoding != self.codec.encoding or \
                not torch.equal(saved.quantiles, self.codec.quantiles) or not torch.equal(saved.changes,
                                                                                        self.codec.changes):
            raise DataError(f"the checkpoint's table encoding is not the one {self.path} gives now (other columns, "
                            f"categories, rows or split): resume on the data the run started with, or start a new run")


def check_relations(relations: dict[str, list[str]], numerical: list[str]) -> None:
    """Named relations relate a numerical column to numbers or to earlier numerical columns (file order)."""
    for name, targets in relations.items():
        if name not in numerical:
            raise ConfigError(f"relations name {name!r}, not a numerical column; relate numerical columns {numerical}")
        earlier = numerical[:numerical.index(name)]
        if bad := [t for t in targets if t not in earlier and not is_number(t)]:
            raise ConfigError(f"relations of {name}: {bad} are neither numbers nor earlier numerical columns {earlier}")


def check_sequences(sequences: list[list[str]], numerical: list[str]) -> dict[str, str]:
    """{column: the column before it} for sequences of numerical columns in file order, each column in one."""
    follows = {}
    for sequence in sequences:
        order = [numerical.index(c) if c in numerical else -1 for c in sequence]
        if len(sequence) < 2 or min(order) < 0 or order != sorted(set(order)) or set(sequence[1:]) & set(follows):
            raise ConfigError(f"sequence {sequence}: list two or more numerical columns in file order "
                              f"{numerical}, each column in one sequence")
        follows |= dict(zip(sequence[1:], sequence))
    return follows


STATUSES = [str(k) for k in range(-2, 9)]  # PAY_*: -2 no use, -1 paid in full, 0 revolving, 1..8 months late
CREDIT_CATEGORICAL = {"SEX": ["1", "2"], "EDUCATION": [str(k) for k in range(7)], "MARRIAGE": ["0", "1", "2", "3"],
                      **{f"PAY_{k}": STATUSES for k in (0, 2, 3, 4, 5, 6)}, "default.payment.next.month": ["0", "1"]}
CREDIT_NUMERICAL = ["LIMIT_BAL", "AGE", *(f"BILL_AMT{i}" for i in range(1, 7)), *(f"PAY_AMT{i}" for i in range(1, 7))]


class CreditDefaultDataModule(TabularDataModule):
    """UCI "default of credit card clients" (``root/credit-default/UCI_Credit_Card.csv``, as on Kaggle): 30,000
    rows, 14 numerical and 10 categorical columns, the target included (docs/credit_default.md)."""

    target = "default.payment.next.month"

    def __init__(self, root: str = "data", encoding: Encoding = "onehot", n_quantiles: int = 1000,
                 batch_size: int = 1024, val_size: int = 3000, test_size: int = 6000, seed: int = 0,
                 num_workers: int = 0, relations: dict[str, list[str | float]] | None = None,
                 relation_share: float | None = 0.03, sequences: list[list[str]] | None = None):
        path = Path(root) / "credit-default" / "UCI_Credit_Card.csv"
        if not path.is_file():
            raise DataError(f"Credit Default not found: {path} is missing; copy UCI_Credit_Card.csv (the UCI 'default "
                            f"of credit card clients' table, as on Kaggle) there, or set data.init_args.root to the "
                            f"folder holding credit-default/")
        super().__init__(str(path), CREDIT_NUMERICAL, CREDIT_CATEGORICAL, encoding, n_quantiles, batch_size,
                         val_size, test_size, seed, num_workers, "refuse", relations, relation_share, sequences)
