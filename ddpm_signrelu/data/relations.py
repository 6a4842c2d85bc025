"""Exact relations of a table's numerical columns (docs/credit_default.md): a point mass (``"0"``, a cap) or an
equality with an earlier column (``"BILL_AMT2"``), held by a share of the rows that a continuous density cannot put
on them. The codec gives each related column a categorical state, "free" or which relation holds, and restores the
relation exactly on decoding."""

import numpy as np

SPIKE = 3  # a point mass holds at least SPIKE x the rows of each neighbouring value


def discover_relations(table: dict[str, np.ndarray], numerical: list[str], share: float) -> dict[str, list[str]]:
    """Per numerical column, the relations that each hold on at least ``share`` of the rows not yet taken, chosen
    greedily (the largest first): point masses that are spikes (:data:`SPIKE`) and equalities with earlier
    numerical columns. Relations are text: a number, or the other column's name."""
    found = {}
    for j, name in enumerate(numerical):
        values, free, chosen = table[name], np.ones(len(table[name]), bool), []
        candidates = {**point_masses(values, share), **{other: values == table[other] for other in numerical[:j]}}
        while candidates:
            best = max(candidates, key=lambda c: np.count_nonzero(candidates[c] & free))
            if np.count_nonzero(candidates[best] & free) < share * len(values):
                break
            chosen.append(best)
            free &= ~candidates.pop(best)
        if chosen:
            found[name] = chosen
    return found


def point_masses(values: np.ndarray, share: float) -> dict[str, np.ndarray]:
    """{value as text: rows holding it} for each value of at least ``share`` of the rows that is a spike."""
    distinct, counts = np.unique(values, return_counts=True)
    neighbours = np.maximum(np.r_[0, counts[:-1]], np.r_[counts[1:], 0])
    spikes = distinct[(counts >= share * len(values)) & (counts >= SPIKE * neighbours)]
    return {str(int(v)) if v == int(v) else repr(float(v)): values == v for v in spikes}


def relation_states(table: dict[str, np.ndarray], name: str, relations: list[str]) -> np.ndarray:
    """Each row's state in column ``name``: 0 free, k the first of ``relations`` (1-based) that holds."""
    state = np.zeros(len(table[name]), np.int64)
    for k, relation in reversed(list(enumerate(relations, 1))):
        state[table[name] == related_values(table, relation)] = k
    return state


def related_values(table: dict[str, np.ndarray], relation: str) -> np.ndarray | float:
    """The values a relation sets: the other column's, or the number."""
    return table[relation] if relation in table else float(relation)
