"""Backend choice of the attention ops (``backend='auto' | 'reference' | 'torch' | 'triton'``).

Every backend of an op declares whether it can run the *actual* tensors of a call: a function
returning ``None`` when it can, else the reason it cannot (device, dtype, shape, head dim, missing
package). :func:`choose_backend` then

* takes the first backend of the op's ``auto`` order (fastest first) that can run them, logging
  once per distinct reason why it skipped the ones before it;
* for an explicit backend, raises ``ValueError`` with the reason when that backend cannot run them.

Only the absence of the ``triton`` package means "no Triton" (:func:`triton_available`): an error
inside our own kernel modules propagates. Value checks that would need a device-to-host copy (index
ranges, offsets) run as device-side asserts (:func:`assert_async`), or in full with a readable
message when debug checks are on (``MMATTN_DEBUG_OPS=1`` or :func:`set_debug_checks`).

This module imports only torch (and triton when present), so ``mmattn.ops`` runs on a machine
without the OpenMMLab stack.
"""
import logging
import os
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

BACKENDS = ('auto', 'reference', 'torch', 'triton')

# A backend's check: () -> None when it can run the call's tensors, else the reason.
Check = Callable[[], Optional[str]]

_logged: set = set()
_debug_checks: Optional[bool] = None


def triton_available() -> bool:
    """Whether the ``triton`` package imports. Only its absence means "no Triton"; any other
    import error (a broken install) propagates."""
    try:
        import triton  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name == 'triton':
            return False
        raise
    return True


def interpreting() -> bool:
    """Whether Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def debug_checks() -> bool:
    """Whether ops run their full, host-syncing input checks (``MMATTN_DEBUG_OPS=1``)."""
    if _debug_checks is not None:
        return _debug_checks
    return os.environ.get('MMATTN_DEBUG_OPS', '0') == '1'


def set_debug_checks(enabled: Optional[bool]) -> None:
    """Force debug checks on / off; ``None`` goes back to the ``MMATTN_DEBUG_OPS`` variable."""
    global _debug_checks
    _debug_checks = enabled


def assert_async(condition: Tensor, message: str) -> None:
    """Assert that a 0-d bool tensor is true without a host sync: raises ``RuntimeError(message)``
    at once for CPU tensors; on CUDA a device-side assert fires at a later launch."""
    torch._assert_async(condition, message)


def autocast_function(function: type, device_type: str) -> type:
    """A subclass of the ``torch.autograd.Function`` ``function`` whose forward / backward carry
    ``torch.amp.custom_fwd`` / ``custom_bwd`` for ``device_type`` and run with autocast off: the
    op computes in the dtype of its inputs (cast by the caller), and backward sees the forward's
    autocast state."""

    # the plain functions, taken here: torch.compile cannot trace ``function.backward`` called
    # through the class from inside another Function's backward
    fwd_impl, bwd_impl = function.forward, function.backward

    def forward(*args, **kwargs):
        with torch.autocast(device_type, enabled=False):
            return fwd_impl(*args, **kwargs)

    def backward(*args, **kwargs):
        with torch.autocast(device_type, enabled=False):
            return bwd_impl(*args, **kwargs)

    return type(f'{function.__name__}_{device_type}', (function, ), dict(
        forward=staticmethod(torch.amp.custom_fwd(forward, device_type=device_type)),
        backward=staticmethod(torch.amp.custom_bwd(backward, device_type=device_type)),
        __doc__=function.__doc__))


def autocast_inputs(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """``tensors`` cast to the autocast dtype of their device when autocast is on there (as a
    matmul would be), else unchanged."""
    device_type = tensors[0].device.type
    if device_type in ('cpu', 'cuda') and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
    return tensors


def triton_device_reason(op: str, tensor: Tensor, explicit: bool) -> Optional[str]:
    """Why the Triton kernels cannot take ``tensor``'s device (or ``None``): CUDA, or CPU under
    ``TRITON_INTERPRET=1`` when asked for explicitly (``'auto'`` never sends CPU tensors to the
    interpreter)."""
    if tensor.device.type == 'cuda':
        return None
    if explicit and tensor.device.type == 'cpu' and interpreting():
        return None
    return (f'{tensor.device.type} tensors: the Triton kernels need a CUDA device (or, for tests, '
            f'TRITON_INTERPRET=1 set before mmattn.ops is imported and backend=\'triton\'); '
            f"use backend='torch' on {tensor.device.type}")


def triton_common_reason(op: str, q: Tensor, has_triton: bool, dtypes: Sequence[torch.dtype],
                         explicit: bool) -> Optional[str]:
    """The checks every Triton backend shares (package, device, dtype; bf16 under the
    interpreter): why the kernels cannot take ``q``, or ``None``."""
    if not has_triton:
        return "the triton package is not installed (pip install 'mmattn[kernels]')"
    reason = triton_device_reason(op, q, explicit)
    if reason is not None:
        return reason
    if q.dtype not in dtypes:
        return f'dtype {q.dtype} (supported: {tuple(dtypes)})'
    if q.dtype == torch.bfloat16 and interpreting():
        return 'bf16 is wrong under TRITON_INTERPRET=1 (interpreter limitation); test bf16 on a GPU'
    return None


def choose_backend(op: str, backend: str, checks: Sequence[Tuple[str, Check]]) -> str:
    """The backend that runs this call.

    Args:
        op: the op's name, for messages.
        backend: ``'auto'`` or a concrete backend name.
        checks: ``(name, check)`` of every concrete backend of the op, the ``auto`` order first
            (fastest first); ``check()`` is ``None`` when that backend can run the call.

    Returns:
        The concrete backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f'{op}: backend must be one of {BACKENDS}, got {backend!r}')
    if backend != 'auto':
        for name, check in checks:
            if name == backend:
                reason = check()
                if reason is not None:
                    raise ValueError(f'{op}: backend={backend!r} cannot run these inputs: '
                                     f'{reason}')
                return name
        raise ValueError(f'{op}: has no backend {backend!r}')
    for name, check in checks:
        reason = check()
        if reason is None:
            return name
        key = (op, name, reason)
        if key not in _logged:
            _logged.add(key)
            logger.info('%s: auto skips backend %r: %s', op, name, reason)
    raise ValueError(f'{op}: no backend can run these inputs')


__all__ = ['BACKENDS', 'assert_async', 'autocast_function', 'autocast_inputs', 'choose_backend',
           'debug_checks', 'interpreting', 'set_debug_checks', 'triton_available',
           'triton_device_reason']
