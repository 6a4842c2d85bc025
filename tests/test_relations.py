"""Exact relations and sequences in the table codec: what is found, the exact round trip, relations restored on
decoding whatever the continuous part says, and the config errors."""

import numpy as np
import pytest
import torch

from ddpm_signrelu.data.relations import discover_relations
from ddpm_signrelu.data.table import TableCodec
from ddpm_signrelu.errors import ConfigError
from test_tabular import module, write_table


def statements(n=2000, seed=0, zeros=0.1):
    """bill1; bill2, equal to bill1 in ~20 % of rows, zero in a share ``zeros``; paid, bill2 in ~30 %, 1000 in ~10 %;
    age, smooth integers (no spike); label."""
    g = np.random.default_rng(seed)
    bill1 = np.round(g.lognormal(9, 1, n))
    bill2 = np.where(g.random(n) < 0.2, bill1, np.round(bill1 * g.lognormal(0, 0.1, n)))
    bill2[g.random(n) < zeros] = 0
    paid = np.select([g.random(n) < 0.3, g.random(n) < 0.15], [bill2, 1000.0], np.round(g.lognormal(7, 1, n)))
    age = g.integers(21, 70, n).astype(float)
    return {"bill1": bill1, "bill2": bill2, "paid": paid, "age": age, "label": g.choice(["a", "b"], n)}


def test_discovery_finds_spikes_and_equalities_greedily():
    table = statements()
    found = discover_relations(table, ["bill1", "bill2", "paid", "age"], share=0.03)
    assert found == {"bill2": ["bill1", "0"], "paid": ["bill2", "1000"]}  # the largest first; age has no spike
    assert discover_relations(table, ["bill1", "bill2", "paid", "age"], share=0.5) == {}


def codec(table, follows=None, relations=None):
    numerical = ["bill1", "bill2", "paid", "age"]
    found = discover_relations(table, numerical, 0.03) if relations is None else relations
    return TableCodec.fit(table, {"label": ["a", "b"]}, relations=found, follows=follows)


@pytest.mark.parametrize("follows", [None, {"bill2": "bill1"}])
def test_round_trip_is_exact_and_decoding_restores_relations(follows):
    """decode(encode) gives the table back exactly (whole-number columns); on noisy rows every row whose state says
    bill2 = bill1 or paid = 1000 decodes to exactly that."""
    table = statements()
    c = codec(table, follows)
    x = c.encode(table)
    assert c.width == 4 + 2 + 3 + 3  # scores, label, bill2's and paid's states
    back = c.decode(x)
    for name, values in table.items():
        np.testing.assert_array_equal(back[name], values)
    noisy = x + 0.3 * torch.randn_like(x)
    rows = c.decode(noisy)
    state = noisy[:, 6:9].argmax(1).numpy()  # bill2: free, = bill1, = 0
    assert (state == 1).sum() > 100 and np.array_equal(rows["bill2"][state == 1], rows["bill1"][state == 1])
    assert (state == 2).sum() > 100 and np.all(rows["bill2"][state == 2] == 0)
    paid = noisy[:, 9:12].argmax(1).numpy()  # paid: free, = bill2, = 1000
    assert np.array_equal(rows["paid"][paid == 1], rows["bill2"][paid == 1]) and np.all(rows["paid"][paid == 2] == 1000)
    rebuilt = TableCodec.from_state(c.state_dict())
    np.testing.assert_array_equal(rebuilt.decode(noisy)["bill2"], rows["bill2"])


def test_point_masses_are_left_out_of_the_quantiles():
    """A column's quantiles are its values off its point masses: their scores are standard normal with no gap where
    the mass was, so noisy free rows decode onto the mass (paid = 1000 on 10 % of the rows, bill2 = 0 below
    every other bill) hardly or never, where the state alone sets it."""
    table = statements()
    c = codec(table)
    x = c.encode(table)
    off_mass = table["paid"] != 1000
    assert abs(x[off_mass, 2].std().item() - 1) < 0.05 and abs(x[off_mass, 2].mean().item()) < 0.05
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rows = c.decode(noisy)
    paid_free, bill2_free = (noisy[:, 9:12].argmax(1) == 0).numpy(), (noisy[:, 6:9].argmax(1) == 0).numpy()
    assert np.mean(rows["paid"][paid_free] == 1000) < 0.005 and not np.any(rows["bill2"][bill2_free] == 0)


def test_an_equality_out_of_the_columns_range_keeps_the_columns_own_value():
    """Every row put in the state paid = bill: where the bill lies outside the payments' training range (a negative
    one, as no payment is), the payment keeps its own value; elsewhere it equals the bill."""
    g = np.random.default_rng(0)
    bill = np.round(g.normal(1000, 800, 3000))
    paid = np.where(g.random(3000) < 0.3, np.abs(bill), np.round(g.uniform(0, 500, 3000)))
    c = TableCodec.fit({"bill": bill, "paid": paid}, {}, relations={"paid": ["bill"]})
    x = c.encode({"bill": bill, "paid": paid})
    x[:, 2:] = torch.tensor([0.0, 1.0])
    rows = c.decode(x)
    inside = (rows["bill"] >= paid.min()) & (rows["bill"] <= paid.max())
    assert (rows["bill"] < 0).sum() > 50 and np.array_equal(rows["paid"][~inside], paid[~inside])
    assert np.array_equal(rows["paid"][inside], rows["bill"][inside])


def test_a_sequence_models_the_change_of_scores():
    """A following column's coordinate is the normal score of its score's change from the column before: nearly
    independent of that column's, where the raw scores are strongly correlated; changing only bill1's coordinate
    moves bill2 with it."""
    table = statements(zeros=0)
    plain, chained = codec(table, relations={}), codec(table, {"bill2": "bill1"}, relations={})
    corr = lambda x: np.corrcoef(x[:, 0], x[:, 1])[0, 1]  # noqa: E731
    x, y = plain.encode(table).double().numpy(), chained.encode(table).double().numpy()
    assert corr(x) > 0.8 and abs(corr(y)) < 0.3 and abs(y[:, 1].mean()) < 0.05 and abs(y[:, 1].std() - 1) < 0.1
    shifted = torch.from_numpy(y).float()
    shifted[:, 0] += 1
    assert np.mean(chained.decode(shifted)["bill2"] > table["bill2"]) > 0.7


def test_named_relations_and_sequences_in_the_data_module(tmp_path):
    """A column spec names relations (numbers, earlier columns) and sequences; off (relation_share null) when none
    are named; bad ones are refused with one line."""
    table = statements(600)
    rows = [[*(table[k][i] for k in ("bill1", "bill2", "paid", "age")), table["label"][i]] for i in range(600)]
    path = write_table(tmp_path / "t.csv", rows, ["bill1", "bill2", "paid", "age", "label"])
    options = {"numerical": ["bill1", "bill2", "paid", "age"], "categorical": ["label"]}
    dm = module(path, **options, relations={"paid": ["bill2", 1000]}, sequences=[["bill1", "bill2"]])
    assert [(c.relations, c.follows) for c in dm.codec.columns[:3]] == [([], None), ([], "bill1"),
                                                                        (["bill2", "1000"], None)]
    found = module(path, **options, relation_share=0.03).codec.columns
    assert found[1].relations == ["bill1", "0"] and found[2].relations == ["bill2", "1000"]
    for bad, match in [({"relations": {"bill1": ["paid"]}}, "neither numbers nor earlier numerical columns"),
                       ({"relations": {"label": ["0"]}}, "not a numerical column"),
                       ({"sequences": [["bill2", "bill1"]]}, "in file order"),
                       ({"sequences": [["bill1", "label"]]}, "in file order"),
                       ({"relation_share": 1.5}, "relation_share is a share")]:
        with pytest.raises(ConfigError, match=match):
            module(path, **options, **bad)
