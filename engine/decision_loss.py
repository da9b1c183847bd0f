"""An SFT trainer that weighs the first answer tokens (the decision) more in the training loss.

Why: the answer opens with ``{"decision":"..."`` and the rest (reasoning, customer response)
is easy, templated text given the decision. With a plain mean over ~190 answer tokens the
one hard token carries ~1% of the gradient, and a tiny model learns the templates long before
the decision (measured: 97% token accuracy with 40% decision accuracy after one epoch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer


def decision_weights(labels: torch.Tensor, n_tokens: int, extra_weight: float) -> torch.Tensor:
    """Per-position loss weights for next-token ``labels`` (B, T): 1 on every trained position,
    ``1 + extra_weight`` on the first ``n_tokens`` trained positions of each row, 0 elsewhere."""
    trained = labels != -100
    rank = trained.long().cumsum(dim=1)  # 1 for the first trained position, 2 for the next, ...
    weights = trained.float()
    return weights + extra_weight * (trained & (rank <= n_tokens)).float()


class DecisionWeightedSFTTrainer(SFTTrainer):
    """SFTTrainer whose training loss is a weighted mean: the first ``decision_tokens`` answer
    tokens count ``1 + decision_loss_weight`` times (evaluation keeps TRL's plain loss, so
    val loss stays comparable across runs)."""

    def __init__(
        self, *args: Any, decision_loss_weight: float = 0.0, decision_tokens: int = 16, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.decision_loss_weight = decision_loss_weight
        self.decision_tokens = decision_tokens

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if self.decision_loss_weight <= 0 or not model.training or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"][:, 1:]
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits[:, :-1]
        ce = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view_as(labels)
        weights = decision_weights(labels, self.decision_tokens, self.decision_loss_weight)
        # normalised by the token count, not the weight sum: the plain tokens keep their usual scale
        return (ce * weights).sum() / (labels != -100).sum().clamp(min=1)
