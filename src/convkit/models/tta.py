"""Test-time augmentation: a model whose logits are averaged over views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("none", "flip", "flip-translate", "selective")

# selective: the share of each batch, the least confident first, that gets flip-translate's
# views. Fixed in advance from published evidence (hiverge's cifar10-speedrun: the 15% least
# confident test images), never tuned on a test set.
SELECTIVE_SHARE = 0.15


class TestTimeAugmented(nn.Module):
    """`model`'s logits averaged over views of the batch.

    flip: the image and its mirror, 1/2 each. flip-translate (airbench's, Jordan 2024): half
    the weight on those two, and a quarter each on the pair shifted one pixel diagonally one
    way and the pair shifted one pixel the other way (the border reflected in): 6 views.
    selective: the plain view of every image; for the least confident 15% of the batch (at
    least one image; ties at the cut all go in), flip-translate's 6 views instead, the plain
    one reused. Confidence is the plain view's largest softmax probability. About 1.75 forward
    passes an image instead of 6; the result depends on the batch only through which images
    are picked."""

    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, mode: str = "flip") -> None:
        super().__init__()
        if mode not in TTA_MODES:
            raise ValueError(f"expected tta in {', '.join(TTA_MODES)}, received {mode!r}")
        self.model, self.mode = model, mode

    def _mirrored(self, x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        # Two calls, not one on a batch twice as large: an exported graph keeps its batch axis
        # free only when nothing splits the batch at a traced size.
        return 0.5 * ((self.model(x) if plain is None else plain) + self.model(x.flip(-1)))

    def _six_views(self, x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        logits = self._mirrored(x, plain)
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        one_way = self._mirrored(padded[..., :h, :w])
        other_way = self._mirrored(padded[..., 2:, 2:])
        return 0.5 * logits + 0.25 * (one_way + other_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return self.model(x)
        if self.mode == "flip":
            return self._mirrored(x)
        if self.mode == "flip-translate":
            return self._six_views(x)
        plain = self.model(x)
        if x.shape[0] == 0:
            return plain
        picked = least_confident(plain, SELECTIVE_SHARE)
        if torch.compiler.is_exporting():  # a traced graph cannot index a batch of unknown size
            return torch.where(picked[:, None], self._six_views(x, plain), plain)
        index = picked.nonzero().squeeze(1)
        return plain.index_copy(0, index, self._six_views(x[index], plain[index]))


def least_confident(logits: torch.Tensor, share: float) -> torch.Tensor:
    """A mask of the ceil(share * n) rows (share in (0, 1], n >= 1) whose largest softmax
    probability is lowest, and of every row tied with the last one picked."""
    confidence = logits.float().softmax(-1).amax(-1)
    k = (round(share * 1000) * confidence.shape[0] + 999) // 1000  # ceil, in integers a
    return confidence <= confidence.sort().values[k - 1]  # traced graph follows for any batch


def with_tta(model: nn.Module, mode: str) -> nn.Module:
    """`model` itself for mode "none", else wrapped in TestTimeAugmented."""
    return model if mode == "none" else TestTimeAugmented(model, mode)
