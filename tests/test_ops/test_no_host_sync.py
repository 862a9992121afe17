"""No host sync on the hot path: a training step of the SLA layer and of the BRA op (every
backend) and of a SLAB block (PRepBN's schedule counters) reads no tensor value on the host.

On a GPU ``torch.cuda.set_sync_debug_mode`` would flag syncs; on the CPU the tensor methods that
copy a value to Python (``item``, ``tolist``, ``bool()``, ``int()``, ``float()``, ``index``) are
patched to record their calls. The counter is checked to see a sync it should see.
"""
import contextlib
from typing import Iterator, List

import pytest
import torch
import torch.nn as nn

import mmattn.ops.bra as bra
import mmattn.ops.sla as sla
from mmattn.models.layers.sla_layer import SLALayer
from mmattn.ops.bra import bra_attention, topk_routing
from mmattn.ops.sla import cu_seqlens_from_counts

HOST_SYNCS = ('item', 'tolist', '__bool__', '__int__', '__float__', '__index__')


@contextlib.contextmanager
def count_host_syncs() -> Iterator[List[str]]:
    """Yield a list that collects the name of every host-reading tensor method called."""
    calls: List[str] = []
    with pytest.MonkeyPatch.context() as mp:
        for name in HOST_SYNCS:
            original = getattr(torch.Tensor, name)

            def wrapper(self, *args, _name=name, _original=original, **kwargs):
                calls.append(_name)
                return _original(self, *args, **kwargs)

            mp.setattr(torch.Tensor, name, wrapper)
        yield calls


def test_counter_sees_syncs():
    x = torch.tensor([1, 2])
    with count_host_syncs() as calls:
        bool(x[0] == 1)
        int(x[1])
        x.tolist()
        x[0].item()
        [0, 1, 2][x[0]]
    assert calls == ['__bool__', '__int__', 'tolist', 'item', '__index__']


@pytest.mark.parametrize('backend',
                         ['reference', 'torch'] + (['triton'] if sla.HAS_TRITON else []))
def test_sla_layer_step_has_no_host_sync(backend, monkeypatch):
    # the torch backend's padded path reads the longest window's length: it runs only on CPU
    # tensors (where that is no sync); CUDA tensors take the chunked path, checked here
    monkeypatch.setattr(sla.chunked, 'PAD_ELEMS', 0)
    torch.manual_seed(0)
    layer = SLALayer(32, 2, backend=backend)
    cu_seqlens = cu_seqlens_from_counts(torch.tensor([3, 0, 40, 1]))
    x = torch.randn(44, 32, requires_grad=True)
    with count_host_syncs() as calls:
        layer(x, cu_seqlens).sum().backward()
    assert calls == []
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize('backend',
                         ['reference', 'torch'] + (['triton'] if bra.HAS_TRITON else []))
def test_bra_step_has_no_host_sync(backend):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 4, 6, 96, generator=g, requires_grad=True)
    q, k, v = qkv.split(32, dim=-1)
    r_idx = topk_routing(q.detach().mean(2), k.detach().mean(2), 2, 32 ** -0.5)
    with count_host_syncs() as calls:
        bra_attention(q, k, v, r_idx, 2, 32 ** -0.5, backend=backend).sum().backward()
    assert calls == []
    assert torch.isfinite(qkv.grad).all()


def test_slab_block_step_has_no_host_sync():
    """A shifted SLAB block (simplified linear attention, PRepBN norms mid-schedule)."""
    from mmattn.models.backbones.swin_family import SwinBlock
    from mmattn.models.layers.prepbn import LinearNorm
    torch.manual_seed(0)
    block = SwinBlock(32, 2, 'linear', window_size=4, shift_size=2,
                      norm_layer=lambda d: LinearNorm(d, step=10, warm=1),
                      mixer_cfg=dict(kernel_size=3)).train()
    x = torch.randn(2, 8 * 8, 32, requires_grad=True)
    lams = []
    with count_host_syncs() as calls:
        for _ in range(3):  # warm-up forward, then two decaying ones
            block(x, (8, 8)).sum().backward()
            lams.append(block.norm1.lam)
    assert calls == []
    assert lams == [1.0, 0.9, 0.8]
    assert isinstance(block.norm1.iter, int)
    assert [m for m in block.modules() if isinstance(m, nn.BatchNorm1d)]
