"""Backend choice shared by the attention operators (``backend='auto'|'reference'|'torch'|'triton'``)."""
import logging

import torch

logger = logging.getLogger(__name__)

BACKENDS = ('auto', 'reference', 'torch', 'triton')


def resolve_backend(op: str, device: torch.device, backend: str, has_triton: bool) -> str:
    """The concrete backend ``backend`` resolves to for tensors on ``device``.

    ``'auto'`` is ``'triton'`` for CUDA tensors when Triton imports, else ``'torch'``; an unknown
    name, or ``'triton'`` without the package, is an error naming ``op``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'{op}: backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'triton' and not has_triton:
        raise RuntimeError(f"{op}: backend='triton' needs the triton package "
                           "(pip install 'mmattn[kernels]')")
    if backend != 'auto':
        return backend
    chosen = 'triton' if (torch.device(device).type == 'cuda' and has_triton) else 'torch'
    logger.debug('%s: auto -> %s (device %s, triton %s)', op, chosen, device,
                 'available' if has_triton else 'missing')
    return chosen
