"""BEVANet's segment heads (mmseg's ``PIDHead`` with the official initialisation) and the official
class-weighted cross-entropy of its auxiliary head."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.pid_head import PIDHead
from torch.nn.modules.batchnorm import _BatchNorm

from mmattn.registry import MODELS

__all__ = ['BEVANetHead', 'PixelMeanCrossEntropyLoss']


@MODELS.register_module()
class BEVANetHead(PIDHead):
    """mmseg ``PIDHead`` (the same three BN-ReLU-3x3-BN-ReLU-1x1 segment heads as the official
    ``head`` / ``seghead_ds`` / ``seghead_db``) for ``mmattn.BEVANet``.

    Differences from ``PIDHead``, each to follow the official code:

    * ``init_weights`` keeps PyTorch's default init (the official ``apply_init=False``) instead of
      ``PIDHead``'s Kaiming / constant init;
    * ``dropout_ratio`` defaults to 0 (the official heads have no dropout) and ``align_corners``
      to True (the official losses and evaluation up-sample logits with ``align_corners=True``).

    Inputs (training) ``(p_aux (B, C/2, h, w), fused (B, C, h, w), d (B, C/2, h, w))``, (eval)
    ``fused``; outputs the matching logits ``(aux (B, K, h, w), main, boundary (B, 1, h, w))`` /
    ``main``. ``forward_all`` gives the three logits in either mode.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int,
                 dropout_ratio: float = 0., align_corners: bool = True, **kwargs):
        super().__init__(in_channels, channels, num_classes, dropout_ratio=dropout_ratio,
                         align_corners=align_corners, **kwargs)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, _BatchNorm)):
                m.reset_parameters()
        self._is_init = True

    def forward_all(self, inputs: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(p_aux, fused, d) features -> (aux, main, boundary) logits, in train or eval mode."""
        x_p, x_i, x_d = inputs
        return (self.p_head(x_p, self.p_cls_seg), self.i_head(x_i, self.cls_seg),
                self.d_head(x_d, self.d_cls_seg))


@MODELS.register_module()
class PixelMeanCrossEntropyLoss(nn.Module):
    """Class-weighted cross-entropy averaged over **all** pixels, ignored ones counting as 0:
    ``loss_weight * mean(CE(score, label, weight=class_weight, reduction='none'))``.

    The official BEVANet / PIDNet auxiliary loss (its per-pixel map is averaged by the training
    loop). mmseg 1.2.2's ``CrossEntropyLoss`` with ``class_weight`` divides by the summed class
    weights of the labels instead, and indexes the weights with the ignore label (an IndexError
    for 255), so it cannot express this. Score (N, C, H, W), label (N, H, W).
    """

    def __init__(self, class_weight: Optional[List[float]] = None, loss_weight: float = 1.0,
                 ignore_index: int = 255, loss_name: str = 'loss_ce'):
        super().__init__()
        self.class_weight = None if class_weight is None else list(map(float, class_weight))
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self._loss_name = loss_name

    def forward(self, score: torch.Tensor, label: torch.Tensor,
                ignore_index: Optional[int] = None, **kwargs) -> torch.Tensor:
        weight = None if self.class_weight is None else score.new_tensor(self.class_weight)
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss = F.cross_entropy(score, label.long(), weight=weight, ignore_index=ignore,
                               reduction='none')
        return self.loss_weight * loss.mean()

    @property
    def loss_name(self) -> str:
        return self._loss_name
