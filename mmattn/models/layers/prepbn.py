"""Progressive re-parameterised BatchNorm (PRepBN, SLAB, ICML 2024) for token tensors.

``RepBN(x) = BN(x) + alpha * x`` over the channels of a (B, N, C) token tensor. ``LinearNorm``
blends a LayerNorm into it, ``lam * LN(x) + (1 - lam) * RepBN(x)``, with ``lam`` going from ``r0``
to 0 over ``total_step`` training steps after ``warm`` LayerNorm-only steps; in eval mode it is
RepBN alone, which :func:`switch_to_deploy` folds into one plain BatchNorm (exactly).

The counters (``warm``, ``iter``, ``total_step``) are Python ints, so that a training step
reads no tensor from the device; they are still saved in and loaded from the state_dict as the
0-d int64 entries of the official checkpoints (state_dict hooks). By default a module advances
its own counters once per training forward, as the official code does;
:class:`mmattn.engine.PRepBNHook` instead sets them from the runner's iteration before every
training step (``self_step = False``), so gradient checkpointing, gradient accumulation and
resuming do not shift the schedule.
"""
from typing import Optional

import torch
import torch.nn as nn

__all__ = ['RepBN', 'LinearNorm', 'TokenBatchNorm', 'switch_to_deploy']

# schedule counters, saved in the state_dict under these names (official checkpoint layout)
_COUNTERS = ('warm', 'iter', 'total_step')


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last (channel) axis of a (B, N, C) token tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: CPU BatchNorm returns a contiguous map for a transposed input, but its
        # meta kernel keeps the input's strides, which breaks views after it under torch.compile
        return super().forward(x.transpose(1, 2).contiguous()).transpose(1, 2)


class RepBN(nn.Module):
    """``BN(x) + alpha * x`` with a scalar ``alpha`` (init 1). x: (B, N, C) -> (B, N, C)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: see TokenBatchNorm.forward
        return self.bn(x.transpose(1, 2).contiguous()).transpose(1, 2) + self.alpha * x

    @torch.no_grad()
    def fuse(self) -> TokenBatchNorm:
        """The equivalent plain BatchNorm (eval statistics).

        weight' = weight + alpha * sigma, bias' = bias + alpha * mu, same running statistics.
        """
        bn = self.bn
        if not bn.track_running_stats or bn.running_var is None:
            raise RuntimeError('RepBN.fuse needs running statistics (track_running_stats=True)')
        fused = TokenBatchNorm(bn.num_features, eps=bn.eps, momentum=bn.momentum)
        fused.to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        sigma = torch.sqrt(bn.running_var + bn.eps)
        weight = bn.weight if bn.affine else torch.ones_like(sigma)
        bias = bn.bias if bn.affine else torch.zeros_like(sigma)
        fused.weight.copy_(weight + self.alpha * sigma)
        fused.bias.copy_(bias + self.alpha * bn.running_mean)
        fused.running_mean.copy_(bn.running_mean)
        fused.running_var.copy_(bn.running_var)
        fused.num_batches_tracked.copy_(bn.num_batches_tracked)
        return fused.train(self.training)


class LinearNorm(nn.Module):
    """PRepBN: LayerNorm -> RepBN, blended linearly during training. x: (B, N, C) -> (B, N, C).

    Args:
        dim: channels C.
        step: length of the decay (``total_step``; official: 60000 classifier, 300000 detection).
        warm: LayerNorm-only steps before the decay starts.
        r0: blend weight of the LayerNorm at the start of the decay.
        ln_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, step: int = 300000, warm: int = 0, r0: float = 1.0,
                 ln_eps: float = 1e-5) -> None:
        super().__init__()
        if step <= 0:
            raise ValueError(f'LinearNorm: step must be positive, got {step}')
        self.warm, self.iter, self.total_step = int(warm), int(step), int(step)
        self.r0 = float(r0)
        self.self_step = True
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.norm2 = RepBN(dim)
        self.register_state_dict_post_hook(LinearNorm._save_counters)
        self.register_load_state_dict_pre_hook(LinearNorm._load_counters)

    @property
    def lam(self) -> float:
        """Current weight of the LayerNorm branch in training mode (1 during warm-up)."""
        if self.warm > 0:
            return 1.0
        return self.r0 * self.iter / self.total_step

    def set_step(self, step: int, warmup: Optional[int] = None,
                 total: Optional[int] = None) -> None:
        """Put the counters where ``step`` training forwards from a fresh start leave them."""
        total = self.total_step if total is None else int(total)
        warmup = 0 if warmup is None else int(warmup)
        step = int(step)
        if total <= 0 or warmup < 0 or step < 0:
            raise ValueError(
                f'LinearNorm.set_step: bad step={step}, warmup={warmup}, total={total}')
        self.total_step = total
        self.warm = max(warmup - step, 0)
        self.iter = min(max(total - max(step - warmup, 0), 0), total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.norm2(x)
        if self.warm > 0:
            if self.self_step:
                self.warm -= 1
            return self.norm1(x)
        lam = self.r0 * self.iter / self.total_step
        if self.self_step and self.iter > 0:
            self.iter -= 1
        if lam == 0.0:
            return self.norm2(x)
        return lam * self.norm1(x) + (1.0 - lam) * self.norm2(x)

    def extra_repr(self) -> str:
        return (f'warm={self.warm}, iter={self.iter}, total_step={self.total_step}, '
                f'r0={self.r0}')

    def _save_counters(self, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        device = self.norm1.weight.device
        if device.type == 'meta':
            device = torch.device('cpu')
        for name in _COUNTERS:
            state_dict[prefix + name] = torch.tensor(getattr(self, name), dtype=torch.long,
                                                     device=device)

    def _load_counters(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                       missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        for name in _COUNTERS:
            value = state_dict.pop(prefix + name, None)
            if value is None:
                missing_keys.append(prefix + name)
            elif not isinstance(value, torch.Tensor) or value.numel() != 1:
                error_msgs.append(f'{prefix}{name}: expected a one-element counter, got '
                                  f'{getattr(value, "shape", type(value).__name__)}')
            else:
                setattr(self, name, int(value))


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Replace every LinearNorm (in place) by the plain BatchNorm its eval mode equals.

    Only the eval-mode function is kept (the LayerNorm branch is dropped), so call it on a model
    used for inference. Returns ``model``.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, LinearNorm):
            setattr(model, name, child.norm2.fuse())
        elif isinstance(child, RepBN):
            setattr(model, name, child.fuse())
        else:
            switch_to_deploy(child)
    return model

