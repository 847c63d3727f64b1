"""Test-time augmentation: a model whose logits are averaged over views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("none", "flip", "flip-translate")


class TestTimeAugmented(nn.Module):
    """`model`'s logits averaged over views of the batch.

    flip: the image and its mirror, 1/2 each. flip-translate (airbench's, Jordan 2024): half
    the weight on those two, and a quarter each on the pair shifted one pixel diagonally one
    way and the pair shifted one pixel the other way (the border reflected in): 6 views."""

    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, mode: str = "flip") -> None:
        super().__init__()
        if mode not in TTA_MODES:
            raise ValueError(f"expected tta in {', '.join(TTA_MODES)}, received {mode!r}")
        self.model, self.mode = model, mode

    def _mirrored(self, x: torch.Tensor) -> torch.Tensor:
        # Two calls, not one on a batch twice as large: an exported graph keeps its batch axis
        # free only when nothing splits the batch at a traced size.
        return 0.5 * (self.model(x) + self.model(x.flip(-1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return self.model(x)
        logits = self._mirrored(x)
        if self.mode == "flip":
            return logits
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        one_way = self._mirrored(padded[..., :h, :w])
        other_way = self._mirrored(padded[..., 2:, 2:])
        return 0.5 * logits + 0.25 * (one_way + other_way)


def with_tta(model: nn.Module, mode: str) -> nn.Module:
    """`model` itself for mode "none", else wrapped in TestTimeAugmented."""
    return model if mode == "none" else TestTimeAugmented(model, mode)
