"""``torch.compile`` and ``torch.export`` of every registered 2D backbone (and BEVANet) and of the
BRA / SLA ops, against eager, on the CPU (fp32: 1e-5 relative).

The default-run tests compile with ``backend='aot_eager'`` (Dynamo graph capture + AOT autograd,
no code generation), on the tiny archs of ``test_backbone_contract.py``; one ``slow`` test runs
the default inductor backend on PoolFormer. Each compiled run counts the graphs Dynamo made: one
graph means no graph break. On the CPU the BRA / SLA ops run their ``torch`` backends (autograd
Functions), which Dynamo traces whole, forward and backward. ONNX (``torch.onnx.export`` +
onnxruntime) runs when ``onnx``, ``onnxscript`` and ``onnxruntime`` import (pinned by
``tools/setup_env.sh``; see ``docs/benchmarks/README.md``).
"""
import copy
import importlib.util
from typing import List, Sequence, Tuple

import pytest
import torch
import torch.nn as nn
from test_backbone_contract import NOT_2D, TINY, weighted_sum
from torch._dynamo.testing import CompileCounterWithBackend

import mmattn  # noqa: F401
from mmattn.ops.bra import bra_attention
from mmattn.ops.sla import cu_seqlens_from_counts, scattered_linear_attention
from mmattn.registry import MODELS
from mmattn.testing import max_rel_error

# relative to each tensor's largest magnitude (fp64: see TRAIN_DTYPE)
TOL = {torch.float32: 1e-5, torch.float64: 1e-8}
SIZE = 64
CONFIGS = {name: spec['cfg'] for name, spec in TINY.items()}
# the smallest BEVANet: one block per layer, smallest strip kernels
CONFIGS['BEVANet'] = dict(arch=dict(channels=8, ppm_channels=8, num_blocks=[1, 1, 1, 1, 1],
                                    semantic_kernel_size=7, detail_kernel_size=7))
NAMES = sorted(CONFIGS)
# The tiny BEVANet's train-step gradients are ill-conditioned in fp32 (BatchNorm statistics over
# 2 x 1 x 1 values at stride 64, gradients up to 2e5): eager fp32 differs from fp64 by 1e-1
# relative, as much as compiled fp32 does (compiled vs eager fp32: 7e-4). Its train step is
# compared in fp64 (compiled vs eager: 1.1e-9, hence the fp64 tolerance 1e-8), where rounding
# does not hide a wrong graph.
TRAIN_DTYPE = {'BEVANet': torch.float64}
HAS_ONNX = all(importlib.util.find_spec(m) is not None
               for m in ('onnx', 'onnxscript', 'onnxruntime'))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(dict(type=f'mmattn.{name}', **CONFIGS[name]))


def image(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def as_tuple(outs) -> Tuple[torch.Tensor, ...]:
    return tuple(outs) if isinstance(outs, (tuple, list)) else (outs, )


def train_step(model: nn.Module, x: torch.Tensor) -> Tuple[List[torch.Tensor], ...]:
    """One train-mode forward and backward: outputs, [x.grad] + parameter gradients, buffers."""
    x = x.clone().requires_grad_()
    outs = as_tuple(model(x))
    weighted_sum(outs).backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]
    return [o.detach() for o in outs], grads, [b.clone() for b in model.buffers()]


def floored_error(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    """``max_rel_error`` per tensor, with each tensor's scale floored at 1e-6 of the largest
    magnitude of all: the gradient of a conv bias before a train-mode BatchNorm, or the running
    mean of a BatchNorm after a zero-mean map, is zero up to rounding, and its relative error
    means nothing."""
    assert len(got) == len(expected)
    if not expected:  # e.g. the buffers of a model without any
        return 0.0
    floor = 1e-6 * max(float(e.abs().max()) for e in expected)
    return max(float((g - e).abs().max()) / max(float(e.abs().max()), floor)
               for g, e in zip(got, expected))


def test_every_registered_2d_backbone_is_covered():
    registered = {name.split('.')[-1] for name, cls in MODELS.module_dict.items()
                  if cls.__module__.startswith('mmattn.models.backbones.')}
    registered |= {name.split('.')[-1] for name, module in getattr(MODELS, 'lazy', {}).items()
                   if module.startswith('mmattn.models.backbones.')}
    assert registered - (set(NOT_2D) - {'BEVANet'}) == set(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_compile_matches_eager(name):
    """aot_eager: a train step (outputs, input and every parameter gradient, BatchNorm
    statistics after) and an eval forward equal eager's, each in one graph."""
    dtype = TRAIN_DTYPE.get(name, torch.float32)
    eager = build(name).to(dtype).train()
    compiled_model = copy.deepcopy(eager)
    x = image(dtype=dtype)
    out0, grad0, buf0 = train_step(eager, x)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(compiled_model, backend=counter)
    out1, grad1, buf1 = train_step(compiled, x)
    assert counter.frame_count == 1  # one graph: no graph break
    assert max_rel_error(out1, out0) <= TOL[dtype]
    assert all(g is not None for g in grad0) and all(g is not None for g in grad1)
    assert floored_error(grad1, grad0) <= TOL[dtype]
    assert floored_error(buf1, buf0) <= TOL[dtype]
    eager.float()
    compiled_model.float()
    eager.eval()
    compiled_model.eval()  # a new graph for eval mode (Dynamo guards on ``training``)
    x = image(seed=1)
    with torch.no_grad():
        ref, got = as_tuple(eager(x)), as_tuple(compiled(x))
    assert counter.frame_count == 2
    assert max_rel_error(got, ref) <= TOL[torch.float32]


@pytest.mark.parametrize('name', NAMES)
def test_export_matches_eager(name):
    """``torch.export.export`` of the eval model; the program equals eager on inputs other than
    the one it was traced with."""
    model = build(name).eval()
    program = torch.export.export(model, (image(), ))
    exported = program.module()
    with torch.no_grad():
        for seed in (1, 2):
            x = image(seed)
            assert max_rel_error(as_tuple(exported(x)), as_tuple(model(x))) <= TOL[torch.float32]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNX, reason='onnx, onnxscript and onnxruntime are not installed '
                    '(tools/setup_env.sh pins them)')
@pytest.mark.parametrize('name', NAMES)
def test_onnx_matches_eager(name, tmp_path):
    import onnxruntime as ort
    model = build(name).eval()
    path = tmp_path / f'{name}.onnx'
    torch.onnx.export(model, (image(), ), str(path), dynamo=True, input_names=['x'])
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = image(seed=1)
    got = [torch.from_numpy(o) for o in session.run(None, {'x': x.numpy()})]
    with torch.no_grad():
        assert max_rel_error(got, as_tuple(model(x))) <= TOL[torch.float32]


def _op_inputs(op: str) -> Tuple[Sequence[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if op == 'bra':  # N=2 images, R=4 regions of 3 query / 5 key tokens, 2 heads of 4 channels
        q, k, v = (torch.randn(2, 4, lq, 8, generator=g) for lq in (3, 5, 5))
        r_idx = torch.randint(0, 4, (2, 4, 2), generator=g)
        return (q, k, v), r_idx
    qkv = torch.randn(20, 3, 2, 8, generator=g)  # windows of 5, 0, 9, 6 rows, 2 heads of 8
    return qkv.unbind(1), cu_seqlens_from_counts(torch.tensor([5, 0, 9, 6]))


def _run_op(op: str, q, k, v, index) -> torch.Tensor:
    if op == 'bra':
        return bra_attention(q, k, v, index, 2, 0.5, backend='torch')
    return scattered_linear_attention(q, k, v, index, backend='torch')


@pytest.mark.parametrize('op', ['bra', 'sla'])
def test_attention_ops_compile_in_one_graph(op):
    """The ``torch`` backends (autograd Functions) compile with ``fullgraph=True``: forward and
    backward equal eager."""
    tensors, index = _op_inputs(op)
    results = []
    torch._dynamo.reset()
    for fn in (_run_op, torch.compile(_run_op, backend='aot_eager', fullgraph=True)):
        q, k, v = (t.clone().requires_grad_() for t in tensors)
        out = fn(op, q, k, v, index)
        grads = torch.autograd.grad(weighted_sum([out]), (q, k, v))
        results.append((out.detach(), grads))
    (out0, grads0), (out1, grads1) = results
    assert max_rel_error(out1, out0) <= TOL[torch.float32]
    assert max_rel_error(grads1, grads0) <= TOL[torch.float32]
    assert all(float(g.abs().max()) > 0 for g in grads0)


@pytest.mark.slow
def test_inductor_matches_eager():
    """The default (inductor) backend, generated C++ kernels, on the smallest backbone: a train
    step (outputs, gradients, buffers) equals eager's."""
    eager = build('PoolFormer').train()
    compiled_model = copy.deepcopy(eager)
    x = image()
    out0, grad0, buf0 = train_step(eager, x)
    torch._dynamo.reset()
    out1, grad1, buf1 = train_step(torch.compile(compiled_model), x)
    assert max_rel_error(out1, out0) <= TOL[torch.float32]
    assert floored_error(grad1, grad0) <= TOL[torch.float32]
    assert floored_error(buf1, buf0) <= TOL[torch.float32]
