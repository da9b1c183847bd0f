"""engine.decision_loss: the first answer tokens weigh more; prompt and padding weigh nothing."""

from __future__ import annotations

import torch

from engine.decision_loss import decision_weights


def test_decision_weights() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, 7, 8], [-100, 5, 6, 7, -100, -100]])
    w = decision_weights(labels, n_tokens=2, extra_weight=4.0)
    assert w.tolist() == [[0, 0, 5, 5, 1, 1], [0, 5, 5, 1, 0, 0]]
    assert torch.equal(decision_weights(labels, 2, 0.0), (labels != -100).float())
