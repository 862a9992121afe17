"""The backbone contract (``mmattn/models/backbones/README.md``), checked for every registered 2D
backbone on tiny custom archs (a few seconds in all on CPU)."""
import inspect

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmattn  # noqa: F401
import mmattn.models.backbones.base as contract
from mmattn.registry import MODELS
from mmattn.testing import max_rel_error

# one tiny arch per registered 2D backbone; stem = parameter-name prefix of the stem
TINY = {
    'BiFormer': dict(
        cfg=dict(arch=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128)), n_win=2,
                 topks=(1, 2, 4, -2), head_dim=8),
        stem=('downsample_layers.0.', )),
    'PoolFormer': dict(
        cfg=dict(arch=dict(depths=(1, 1, 2, 1), embed_dims=(8, 16, 24, 32))),
        stem=('patch_embed.', )),
    'AgentSwinTransformer': dict(
        cfg=dict(arch=dict(embed_dims=8, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8)),
                 attn_type='AAAB'),
        stem=('patch_embed.', )),
    'SLABSwinTransformer': dict(
        cfg=dict(arch=dict(embed_dims=8, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8)),
                 window_sizes=(8, 4, 7, 7), norm_step=4),
        stem=('patch_embed.', )),
}
# a BatchNorm variant of each backbone for the norm_eval checks (None: the model has none)
WITH_BN = {'BiFormer': dict(norm_cfg=dict(type='SyncBN')),  # eval-mode SyncBN runs on CPU
           'PoolFormer': dict(norm_cfg=dict(type='BN')),
           'AgentSwinTransformer': None,
           'SLABSwinTransformer': dict()}  # RepBN's BatchNorm1d
# registered backbones outside this contract, with the reason
NOT_2D = {'ScatterFormerBackbone': 'points in, one BEV map out (see the README)',
          'ScatterFormerMiddleEncoder': "mmdet3d's middle_encoder slot: voxels in, one BEV map out",
          'DynamicPFNVFE': "mmdet3d's voxel_encoder slot: points in, voxel features out",
          'BEVANet': "a whole real-time segmenter body for its own PID head (mmseg PIDNet's "
                     'contract: three stride-8 maps in training, the fused one in eval), not a '
                     'stride pyramid for a generic neck'}
NAMES = sorted(TINY)
SIZE = 64


def build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(dict(type=f'mmattn.{name}', **{**TINY[name]['cfg'], **kwargs}))


def image(batch: int = 2, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def weighted_sum(outs) -> torch.Tensor:
    """A loss that reaches every output element with a distinct weight."""
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


def test_every_registered_2d_backbone_is_covered():
    """A new backbone must be added to ``TINY`` (or, with a reason, to ``NOT_2D``)."""
    registered = {name.split('.')[-1] for name, cls in MODELS.module_dict.items()
                  if cls.__module__.startswith('mmattn.models.backbones.')}
    registered |= {name.split('.')[-1] for name, module in getattr(MODELS, 'lazy', {}).items()
                   if module.startswith('mmattn.models.backbones.')}  # not imported yet
    assert registered - set(NOT_2D) == set(TINY)


@pytest.mark.parametrize('name', NAMES)
def test_common_arguments_and_attributes(name):
    cls = MODELS.get(f'mmattn.{name}')
    params = inspect.signature(cls.__init__).parameters
    for arg in ('arch', 'in_channels', 'out_indices', 'frozen_stages', 'norm_eval', 'with_cp',
                'drop_path_rate', 'init_cfg'):
        assert arg in params, arg
    assert params['frozen_stages'].default == -1 and params['with_cp'].default is False
    assert params['drop_path_rate'].default == 0
    assert isinstance(cls.arch_zoo, dict) and cls.arch_zoo
    assert not any(hasattr(cls, n) for n in ('arch_settings', 'ARCH_SETTINGS'))
    for arch in cls.arch_zoo.values():
        assert {'depths', 'embed_dims'} <= set(arch)
    model = build(name, out_indices=(-1, 0))
    assert model.out_indices == (0, model.num_stages - 1)
    assert len(model.depths) == len(model.embed_dims) == model.num_stages == 4


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (3, 1), (-2, 0)])
def test_outputs_in_stride_order(name, out_indices):
    model = build(name, out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(image())
    stages = sorted({i % 4 for i in out_indices})
    assert [tuple(o.shape) for o in outs] == [
        (2, model.embed_dims[i], SIZE // 2 ** (i + 2), SIZE // 2 ** (i + 2)) for i in stages]


@pytest.mark.parametrize('name', NAMES)
def test_in_channels(name):
    model = build(name, in_channels=1).eval()
    with torch.no_grad():
        outs = model(image(channels=1))
    assert outs[0].shape[:2] == (2, model.embed_dims[0])
    with pytest.raises(RuntimeError):
        model(image(channels=3))


@pytest.mark.parametrize('name', NAMES)
def test_empty_batch_gives_empty_outputs(name):
    model = build(name).eval()
    with torch.no_grad():
        outs = model(image(batch=0))
    assert [tuple(o.shape) for o in outs] == [
        (0, model.embed_dims[i], SIZE // 2 ** (i + 2), SIZE // 2 ** (i + 2)) for i in range(4)]


def _params_used_by_stages(name: str, k: int) -> set:
    """Names of the parameters the outputs of stages 0..k-1 depend on (nothing frozen)."""
    model = build(name).train()
    outs = model(image())
    weighted_sum(outs[:k]).backward()
    return {n for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('name', NAMES)
def test_frozen_stages(name):
    """k >= 1 freezes exactly what the outputs of stages 0..k-1 depend on; 0 the stem; frozen
    parameters get no gradient, frozen modules stay in eval through ``train()``."""
    all_params = {n for n, _ in build(name).named_parameters()}
    for k in (-1, 0, 1, 2, 4):
        model = build(name, frozen_stages=k)
        model.train(False).train()
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        if k == -1:
            assert not frozen
        elif k == 0:
            assert frozen and frozen == {n for n in all_params
                                         if n.startswith(TINY[name]['stem'])}
        else:
            assert frozen == _params_used_by_stages(name, k), k
        loss = weighted_sum(model(image()))
        if loss.requires_grad:  # everything frozen: nothing to differentiate
            loss.backward()
        assert {n for n, p in model.named_parameters() if p.grad is None} == frozen, k
        _check_eval_follows_freezing(model, k)
    with pytest.raises(ValueError, match='frozen_stages'):
        build(name, frozen_stages=5)


def _check_eval_follows_freezing(model: nn.Module, k: int) -> None:
    """Every leaf module (Dropout, DropPath, norms, ...) is in eval mode if the nearest module
    around it that has parameters is wholly frozen, and in train mode if wholly trainable."""
    mods = dict(model.named_modules())
    for name, leaf in mods.items():
        if next(leaf.children(), None) is not None:
            continue
        parts = name.split('.')
        for j in range(len(parts), -1, -1):
            params = list(mods['.'.join(parts[:j])].parameters())
            if params:
                break
        if not any(p.requires_grad for p in params):
            assert not leaf.training, (k, name)
        elif all(p.requires_grad for p in params):
            assert leaf.training or isinstance(leaf, _BatchNorm) and model.norm_eval, (k, name)


def _bn_stats(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}


@pytest.mark.parametrize('name', NAMES)
def test_norm_eval_keeps_statistics(name):
    if WITH_BN[name] is None:
        model = build(name, norm_eval=True).train()
        assert model.norm_eval and not _bn_stats(model)
        return
    model = build(name, norm_eval=True, **WITH_BN[name]).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(m.training for m in bns)
    before = _bn_stats(model)
    model(image())
    after = _bn_stats(model)
    assert before and all(torch.equal(after[k], v) for k, v in before.items())
    # without norm_eval the same forward moves them (so the check above can fail)
    if WITH_BN[name].get('norm_cfg', {}).get('type') == 'SyncBN':
        return  # a train-mode SyncBN needs a process group
    model = build(name, norm_eval=False, **WITH_BN[name]).train()
    before = _bn_stats(model)
    model(image())
    assert any(not torch.equal(_bn_stats(model)[k], v) for k, v in before.items())


@pytest.mark.parametrize('name', NAMES)
def test_with_cp_same_outputs_gradients_and_state(name, monkeypatch):
    """Same weights, drop path 0, train mode (BatchNorm statistics and PRepBN counters moving):
    ``with_cp=True`` equals ``with_cp=False`` in outputs, every gradient and every buffer after."""
    calls = []
    real = contract.cp.checkpoint
    monkeypatch.setattr(contract.cp, 'checkpoint',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    extra = dict(norm_eval=False, **(WITH_BN[name] or {}))
    if extra.get('norm_cfg', {}).get('type') == 'SyncBN':
        extra['norm_cfg'] = dict(type='BN')
    results = []
    ref_state = None
    for with_cp in (False, True):
        model = build(name, with_cp=with_cp, drop_path_rate=0., **extra)
        if ref_state is None:
            ref_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(ref_state)
        model.train()
        x = image().requires_grad_()
        for _ in range(2):  # two steps: the second sees the state the first left
            model.zero_grad()
            x.grad = None
            outs = model(x)
            weighted_sum(outs).backward()
        grads = [x.grad] + [p.grad for p in model.parameters()]
        results.append(([o.detach() for o in outs], grads, model.state_dict()))
    assert len(calls) == 2 * sum(TINY[name]['cfg']['arch']['depths'])
    (out0, grad0, state0), (out1, grad1, state1) = results
    assert max_rel_error(out1, out0) <= 1e-6
    assert all(g is not None for g in grad0)
    assert max_rel_error(grad1, grad0) <= 1e-6
    assert state0.keys() == state1.keys()
    assert [k for k in state0 if not torch.equal(state0[k], state1[k])] == []


@pytest.mark.parametrize('name', NAMES)
def test_unknown_and_old_arguments_raise(name):
    with pytest.raises(TypeError, match='in_chans: renamed in_channels'):
        build(name, in_chans=3)
    with pytest.raises(TypeError, match=r"pretrained: pass init_cfg=dict\(type='Pretrained'"):
        build(name, pretrained='x.pth')
    with pytest.raises(TypeError, match='no_such_argument: unknown argument'):
        build(name, no_such_argument=1)
    with pytest.raises(ValueError, match=f"unknown {name} arch 'huge'"):
        build(name, arch='huge')
    arch = dict(TINY[name]['cfg']['arch'], no_such_key=1)
    with pytest.raises(ValueError, match='no_such_key'):
        build(name, arch=arch)
    with pytest.raises(ValueError, match='out_indices'):
        build(name, out_indices=(4, ))


@pytest.mark.parametrize('name', NAMES)
def test_init_cfg_list(name):
    model = build(name, init_cfg=[dict(type='Constant', layer='Conv2d', val=0.25, bias=0.)])
    model.init_weights()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(torch.all(m.weight == 0.25) for m in convs)


@pytest.mark.parametrize('name', NAMES)
def test_arch_zoo_builds_on_meta(name):
    """Every named arch builds (on the meta device) with the widths its table gives."""
    cls = MODELS.get(f'mmattn.{name}')
    for arch, setting in cls.arch_zoo.items():
        with torch.device('meta'):
            model = cls(arch=arch)
        dims = setting['embed_dims']
        dims = [dims * 2 ** i for i in range(4)] if isinstance(dims, int) else list(dims)
        assert list(model.embed_dims) == dims and list(model.depths) == list(setting['depths'])


def test_scatterformer_frozen_stages_and_norm_eval():
    model = MODELS.build(dict(type='mmattn.ScatterFormerBackbone', dim=16, num_heads=2,
                              vfe_channels=(8, 8), frozen_stages=1, norm_eval=True)).train()
    frozen = {n.split('.')[0] + ('.' + n.split('.')[1] if n.startswith(('stages', 'downs')) else '')
              for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'vfe', 'cpe', 'stages.0'}
    assert not model.stages[0].training and model.stages[1].training and model.pool.training
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    model = MODELS.build(dict(type='mmattn.ScatterFormerBackbone', dim=16, num_heads=2,
                              vfe_channels=(8, 8), frozen_stages=2)).train()
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
