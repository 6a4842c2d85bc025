"""Tables: the codec's round trip and its agreement with scikit-learn, the bad-CSV errors, and the Credit Default
split."""

import csv

import numpy as np
import pytest
import torch

from ddpm_signrelu.data import CreditDefaultDataModule, TabularDataModule
from ddpm_signrelu.data.table import TableCodec, parse_table, read_csv, write_csv
from ddpm_signrelu.errors import ConfigError, DataError
from helpers import shared_copy

HEADER = ["id", "amount", "age", "colour", "late", "target"]


def write_table(path, rows, header=HEADER):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def small_table(tmp_path, n=400, seed=0):
    """amount: continuous, heavy-tailed, with a mass at 0; age: integer; colour, late (-2..3), target: categorical."""
    g = np.random.default_rng(seed)
    amount = np.where(g.random(n) < 0.3, 0.0, np.round(g.lognormal(8, 1.5, n), 2))
    rows = [[i, amount[i], g.integers(21, 70), g.choice(["red", "green", "blue"]), g.integers(-2, 4),
             int(g.random() < 0.2)] for i in range(n)]
    return write_table(tmp_path / "table.csv", rows)


def module(path, **kwargs):
    """The table's data module, by default without relations (tests/test_relations.py has them)."""
    options = {"numerical": ["amount", "age"], "categorical": ["colour", "late", "target"], "val_size": 50,
               "test_size": 50, "relation_share": None} | kwargs
    return TabularDataModule(str(path), **options)


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_codec_round_trip_restores_the_table(tmp_path, encoding):
    """decode(encode(rows)) gives the rows back: categories and integer columns exactly, other numbers to fp32
    resolution; one-hot blocks are exact {0, 1} with one 1 per row."""
    dm = module(small_table(tmp_path), encoding=encoding)
    dm.setup("fit")
    train = dm.tables()["train"]
    assert dm.data_shape == ((2 + 3 + 6 + 2,) if encoding == "onehot" else (5,))
    x = dm.train_data
    back = dm.codec.decode(x)
    assert list(back) == ["amount", "age", "colour", "late", "target"]
    for name in ("age", "colour", "late", "target"):
        np.testing.assert_array_equal(back[name], train[name])
    np.testing.assert_allclose(back["amount"], train["amount"], rtol=1e-5, atol=1e-3)
    if encoding == "onehot":
        blocks = x[:, 2:]
        assert set(blocks.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(blocks[:, :3].sum(1), torch.ones(len(x)))  # colour: blue, green, red
    assert dm.codec.columns[3].categories == ["-2", "-1", "0", "1", "2", "3"]  # numbers in numerical order


def test_codec_scores_match_scikit_learn_and_spread_ties(tmp_path):
    """The normal scores are scikit-learn's QuantileTransformer's where values are distinct; a value tied with the
    minimum (the zeros) sits at the middle of its rank range, not at the clip -5.2 scikit-learn gives it."""
    from scipy.stats import norm
    from sklearn.preprocessing import QuantileTransformer

    dm = module(small_table(tmp_path, n=1000))
    dm.setup("fit")
    amount = dm.tables()["train"]["amount"]
    scores = dm.train_data[:, 0].double().numpy()
    fitted = QuantileTransformer(n_quantiles=1000, output_distribution="normal").fit(amount[:, None])
    positive = amount > 0
    np.testing.assert_allclose(scores[positive], fitted.transform(amount[:, None])[positive, 0], atol=1e-6)
    zero_share = (amount == 0).mean()
    assert np.allclose(scores[~positive], norm.ppf(zero_share / 2), atol=0.02)
    assert np.all(fitted.transform(amount[:, None])[~positive, 0] < -5)


def test_codec_state_rebuilds_the_same_decoder(tmp_path):
    dm = module(small_table(tmp_path))
    dm.setup("fit")
    copy = TableCodec.from_state(dm.state_dict()["table_codec"])
    x = torch.randn(64, dm.codec.width)
    for name, values in dm.codec.decode(x).items():
        np.testing.assert_array_equal(copy.decode(x)[name], values)
    decoded = dm.codec.decode(x * 3)  # out-of-range scores decode within the training range
    assert decoded["age"].min() >= dm.tables()["train"]["age"].min()
    assert decoded["amount"].max() <= dm.tables()["train"]["amount"].max()
    with pytest.raises(ConfigError, match="rows of width 13"):
        dm.codec.decode(x[:, :5])


def test_written_csv_keeps_columns_integers_and_labels(tmp_path):
    dm = module(small_table(tmp_path))
    dm.setup("fit")
    write_csv(dm.codec.decode(dm.val_data), tmp_path / "out.csv", dm.codec.columns)
    header, cells = read_csv(tmp_path / "out.csv")
    assert header == ["amount", "age", "colour", "late", "target"] and len(cells) == 50
    assert all(c.isdigit() for c in cells[:, 1]) and set(cells[:, 2]) <= {"red", "green", "blue"}
    assert set(cells[:, 3]) <= {"-2", "-1", "0", "1", "2", "3"}


def test_split_is_seeded_disjoint_and_keeps_test_rows_out(tmp_path):
    path = small_table(tmp_path)
    dm = module(path, numerical=["id", "amount", "age"])
    dm.setup("fit")
    ids = {k: set(v["id"].tolist()) for k, v in dm.tables().items()}
    assert [len(ids[k]) for k in ("train", "val", "test")] == [300, 50, 50]
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    served = set(dm.codec.decode(torch.cat([dm.train_data, dm.val_data]))["id"].tolist())
    assert not served & ids["test"]
    again = module(path, numerical=["id", "amount", "age"])
    again.setup("fit")
    assert torch.equal(again.train_data, dm.train_data)
    other = module(path, numerical=["id", "amount", "age"], seed=1)
    assert set(other.tables()["test"]["id"].tolist()) != ids["test"]


def test_resuming_on_other_data_is_refused(tmp_path):
    dm = module(small_table(tmp_path))
    (tmp_path / "other").mkdir()
    other = module(small_table(tmp_path / "other", seed=1))
    with pytest.raises(DataError, match="table encoding is not the one"):
        other.load_state_dict(dm.state_dict())
    module(dm.path).load_state_dict(dm.state_dict())  # the same file and split: accepted


@pytest.mark.parametrize("rows, header, kwargs, match", [
    ([[1, 2.5, 30, "red", 0, 1]], ["id", "amount", "age", "colour", "late", "label"], {},
     r"lacks column\(s\) \['target'\] that the column spec names"),
    ([[1, "12k", 30, "red", 0, 1]], HEADER, {}, "numerical column amount holds '12k' on line 2, not a number"),
    ([[1, 2.5, "", "red", 0, 1]], HEADER, {}, r"column age is missing a value on line 2 \(''"),
    ([[1, 2.5, 30, "NaN", 0, 1]], HEADER, {}, "column colour is missing a value .* or set missing: category"),
    ([[1, "NA", 30, "red", 0, 1]], HEADER, {"missing": "category"}, r"amount is missing .* \(a numerical column\)"),
    ([[1, 2.5, 30, "pink", 0, 1]], HEADER, {"categorical": {"colour": ["red", "green", "blue"], "late": None,
                                                             "target": None}},
     r"colour holds \['pink'\] not among its categories"),
    ([[1, 2.5, 30, "red", 0, 1]], ["id", "amount", "age", "colour", "colour", "target"], {}, "more than once"),
    ([[1, 2.5, 30, "red", 0]], HEADER, {}, "line 2 has 5 fields but the header has 6"),
    ([[1, "inf", 30, "red", 0, 1]], HEADER, {}, "only finite numbers"),
    ([], HEADER, {}, "holds no data rows"),
])
def test_bad_csv_gets_one_clear_error(tmp_path, rows, header, kwargs, match):
    path = write_table(tmp_path / "bad.csv", rows * 200, header)
    with pytest.raises(DataError, match=match):
        module(path, **kwargs).setup("fit")


def test_bad_settings_are_refused(tmp_path):
    path = small_table(tmp_path)
    with pytest.raises(ConfigError, match="both numerical and categorical"):
        module(path, numerical=["amount", "colour"]).setup("fit")
    with pytest.raises(ConfigError, match="leave no training rows"):
        module(path, val_size=200, test_size=200).setup("fit")
    with pytest.raises(ConfigError, match="unknown categorical encoding 'binary'"):
        module(path, encoding="binary")
    with pytest.raises(DataError, match="table not found"):
        module(tmp_path / "none.csv").setup("fit")
    with pytest.raises(DataError, match="Credit Default not found: .*copy UCI_Credit_Card.csv"):
        CreditDefaultDataModule(root=str(tmp_path))


def test_missing_cells_as_a_category_round_trip(tmp_path):
    """Under missing="category", NaN / NA / empty cells of a categorical column are one label "" (an empty cell in
    the written CSV), after the declared labels; a declared column without them keeps its labels."""
    rows = [[i, 1.5 * i, 30 + i % 7, ["red", "NaN", "", "n/a", "blue"][i % 5], i % 3, i % 2] for i in range(400)]
    path = write_table(tmp_path / "gaps.csv", rows)
    dm = module(path, categorical={"colour": ["red", "blue"], "late": ["0", "1", "2"], "target": None},
                missing="category")
    dm.setup("fit")
    colour, late = dm.codec.columns[2], dm.codec.columns[3]
    assert colour.categories == ["red", "blue", ""] and late.categories == ["0", "1", "2"]
    train = dm.tables()["train"]
    assert 0.5 < (train["colour"] == "").mean() < 0.7
    np.testing.assert_array_equal(dm.codec.decode(dm.train_data)["colour"], train["colour"])
    write_csv(train, tmp_path / "out.csv", dm.codec.columns)
    assert {r[2] for r in list(csv.reader(open(tmp_path / "out.csv")))[1:]} == {"red", "blue", ""}


def test_credit_default_refuses_a_stray_label(tmp_path):
    """The table's categories are declared: a NaN (or any label outside the codebook) in EDUCATION is one line, not
    an eleventh education label."""
    folder = shared_copy("credit-default", tmp_path / "data")
    lines = (folder / "UCI_Credit_Card.csv").read_text().splitlines()
    fields = lines[5].split(",")
    for text, match in (("NaN", "EDUCATION is missing a value on line 6"), ("9", r"EDUCATION holds \['9'\]")):
        fields[3] = text
        (folder / "UCI_Credit_Card.csv").write_text("\n".join([*lines[:5], ",".join(fields), *lines[6:]]) + "\n")
        with pytest.raises(DataError, match=match):
            CreditDefaultDataModule(root=str(tmp_path / "data")).setup("fit")


def test_unseen_category_at_encoding_is_refused(tmp_path):
    dm = module(small_table(tmp_path))
    table = dict(dm.tables()["val"])
    table["colour"] = np.array(["violet"] * len(table["colour"]))
    with pytest.raises(DataError, match=r"colour holds \['violet'\], not among the categories"):
        dm.codec.encode(table)


def test_credit_default_split_and_columns(tmp_path):
    root = shared_copy("credit-default", tmp_path / "data").parent
    dm = CreditDefaultDataModule(root=str(root))
    dm.setup("fit")
    tables = dm.tables()
    assert [len(tables[k]["AGE"]) for k in ("train", "val", "test")] == [21000, 3000, 6000]
    assert dm.train_data.shape == (21000, dm.codec.width) and dm.val_data.shape == (3000, dm.codec.width)
    assert "ID" not in tables["train"] and len(dm.codec.columns) == 24
    kinds = {c.name: (c.kind, c.integer) for c in dm.codec.columns}
    assert kinds["LIMIT_BAL"] == ("numerical", True) and kinds["PAY_0"][0] == "categorical"
    relations = {c.name: c.relations for c in dm.codec.columns if c.relations}  # docs/credit_default.md lists them
    assert relations == {"LIMIT_BAL": ["50000"], "BILL_AMT1": ["0"], **{
        f"BILL_AMT{k}": [f"BILL_AMT{k - 1}", "0"] for k in range(2, 6)}, "BILL_AMT6": ["0", "BILL_AMT5"],
        "PAY_AMT1": ["BILL_AMT2", "0", "2000", "3000"], "PAY_AMT2": ["BILL_AMT3", "0", "PAY_AMT1"],
        "PAY_AMT3": ["BILL_AMT4", "0", "PAY_AMT2", "1000", "2000"], "PAY_AMT4": ["BILL_AMT5", "0", "PAY_AMT3", "1000"],
        "PAY_AMT5": ["BILL_AMT6", "PAY_AMT4", "0", "2000"], "PAY_AMT6": ["0", "PAY_AMT5", "PAY_AMT4"]}
    assert dm.codec.width == 14 + 81 + sum(len(r) + 1 for r in relations.values()) == 143
    target = np.concatenate([t["default.payment.next.month"] for t in tables.values()])
    assert (target == "1").sum() == 6636  # the file's defaults, all of them in one of the splits
    assert 0.2 < (tables["test"]["default.payment.next.month"] == "1").mean() < 0.24
    header, cells = read_csv(root / "credit-default" / "UCI_Credit_Card.csv")
    whole = parse_table("", header, cells, ["ID"], {})
    assert len(set(whole["ID"].tolist())) == 30000


def test_stratified_keeps_the_training_shares_of_a_label():
    """Quotas by largest remainders from the codec's training counts, the first rows of each label in order kept;
    too few rows of a label is refused with the fix."""
    from ddpm_signrelu.data.table import Column, stratified

    column = Column("y", "categorical", categories=["0", "1", "2"], counts=[50, 30, 20])
    table = {"y": np.array(list("0001201110212")), "x": np.arange(13.0)}
    kept = stratified(table, column, 6)  # shares 3, 1.8, 1.2 -> 3, 2, 1
    assert kept["x"].tolist() == [0, 1, 2, 3, 4, 6] and kept["y"].tolist() == ["0", "0", "0", "1", "2", "1"]
    with pytest.raises(DataError, match=r"only 5 of the 13 rows drawn have y = '0' and 10 are needed; draw more"):
        stratified(table, column, 20)
    with pytest.raises(ConfigError, match="has no training label counts"):
        stratified(table, Column("x", "numerical"), 6)
