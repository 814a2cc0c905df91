"""The collapse detector (the cosine target) against hand-computed cosines."""

from __future__ import annotations

import math

import pytest
import torch

from persona_demo.engine.plug import PlugOutput
from persona_demo.evaluation.collapse import mean_cross_user_cosine, persona_cosines


def test_only_pairs_of_different_users_that_fill_the_position_count():
    vectors = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    users = ["a", "a", "b", "c"]
    everyone = torch.ones(4, dtype=torch.long)
    # Different-user pairs (both orders): (0,2) 0, (0,3) r, (1,2) 0, (1,3) r, (2,3) r with r = 1/sqrt(2).
    r = 1 / math.sqrt(2)
    assert mean_cross_user_cosine(vectors, everyone, users) == pytest.approx(3 * r / 5)
    without_last = torch.tensor([1, 1, 1, 0])  # row 3 has no item in this position
    assert mean_cross_user_cosine(vectors, without_last, users) == pytest.approx(0.0)
    assert math.isnan(mean_cross_user_cosine(vectors, everyone, ["a"] * 4))


def test_persona_cosines_reads_p_u_then_each_item_token():
    soft = torch.zeros(2, 3, 2)
    soft[:, 0] = torch.tensor([1.0, 0.0])  # the instruction token is the same for everyone: never counted
    soft[0, 1], soft[1, 1] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    soft[0, 2], soft[1, 2] = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])
    out = PlugOutput(soft, torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 1))
    result = persona_cosines(out, ["u", "v"])
    assert result["persona_cosine"] == pytest.approx(0.0)
    assert result["persona_cosine_by_token"] == pytest.approx([0.0, 1.0])
