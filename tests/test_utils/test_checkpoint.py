"""The one checkpoint path (mmattn.utils.checkpoint): safe reading, unwrapping, the family
registry, loading with a report, and mmengine's Runner checkpoints read with weights_only=True."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import mmattn  # noqa: F401
from mmattn.utils import checkpoint as ckpt_mod
from mmattn.utils.checkpoint import (CheckpointError, check_checkpoint, filter_checkpoint,
                                     get_family, load_checkpoint, load_file, load_url,
                                     register_family, strip_prefix, unwrap_state_dict)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class Evil:
    """Unpickling it creates a directory: any code could run instead."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker, )


@pytest.fixture
def evil_file(tmp_path):
    marker = str(tmp_path / 'code_ran')
    path = str(tmp_path / 'downloaded.pth')
    torch.save({'state_dict': {'weight': torch.ones(2)}, 'meta': {'x': Evil(marker)}}, path)
    assert not osp.exists(marker)
    return path, marker


@pytest.fixture
def no_opt_in(monkeypatch):
    monkeypatch.delenv(ckpt_mod.UNSAFE_ENV, raising=False)
    ckpt_mod.allow_unsafe_load(False)
    yield
    ckpt_mod.allow_unsafe_load(False)


# ------------------------------------------------------------------------------------ safe reading
def test_code_in_a_checkpoint_does_not_run(evil_file, no_opt_in):
    from mmengine.runner.checkpoint import CheckpointLoader
    path, marker = evil_file
    with pytest.raises(CheckpointError, match=re.escape(path) + r': refusing to unpickle '
                       r'.*makedirs.*MMATTN_UNSAFE_LOAD=1'):
        load_file(path)
    # every way a user names a checkpoint goes through the same reader
    with pytest.raises(CheckpointError, match='refusing to unpickle'):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')  # load_from, --resume
    with pytest.raises(CheckpointError, match='refusing to unpickle'):
        check_checkpoint(nn.Linear(2, 2), path)  # tools/test.py, tools/train.py
    from mmattn.models.backbones.poolformer import PoolFormer
    with pytest.raises(CheckpointError, match='refusing to unpickle'):
        PoolFormer('s12', init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    assert not osp.exists(marker)


def test_opt_in_unpickles_everything(evil_file, no_opt_in, monkeypatch):
    """The opt-in really switches to full unpickling (so the test above could see code run)."""
    path, marker = evil_file
    monkeypatch.setenv(ckpt_mod.UNSAFE_ENV, '1')
    assert torch.equal(load_file(path)['state_dict']['weight'], torch.ones(2))
    assert osp.isdir(marker)


def test_config_opt_in(evil_file, no_opt_in, tmp_path):
    from mmattn.utils.runner import load_config
    path, marker = evil_file
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text('unsafe_load = True\n')
    load_config(str(cfg_file))
    load_file(path)
    assert osp.isdir(marker)


def test_mmengine_reads_through_the_safe_loader():
    import mmengine.runner.checkpoint as mm_ckpt
    assert mm_ckpt.CheckpointLoader._schemes[''] is ckpt_mod._load_local
    assert mm_ckpt.load_url is load_url  # https://, open-mmlab://, torchvision://


def test_url_checkpoints_are_read_safely(evil_file, no_opt_in, tmp_path):
    path, marker = evil_file
    with pytest.raises(CheckpointError, match='refusing to unpickle'):
        load_url('file://' + path, model_dir=str(tmp_path / 'hub'))
    assert not osp.exists(marker)
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.arange(3)}, good)
    out = load_url('file://' + str(good), model_dir=str(tmp_path / 'hub'))
    assert torch.equal(out['w'], torch.arange(3))


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_file(str(tmp_path / 'nope.pth'))
    garbage = tmp_path / 'garbage.pth'
    garbage.write_text('not a checkpoint')
    with pytest.raises(CheckpointError, match='garbage.pth is not a readable PyTorch checkpoint'):
        load_file(str(garbage))


# -------------------------------------------------------------------------- containers, prefixes
@pytest.mark.parametrize('wrap', ['state_dict', 'model', 'module', None])
def test_unwrap_once(wrap):
    sd = {'module.a.weight': torch.ones(1), 'b': torch.zeros(1)}
    ckpt = {wrap: sd, 'meta': {'epoch': 1}} if wrap else dict(sd, step=3)
    assert set(unwrap_state_dict(ckpt)) == {'a.weight', 'b'}


def test_empty_and_non_dict_checkpoints():
    with pytest.raises(CheckpointError, match='x.pth: holds no tensors'):
        unwrap_state_dict({'state_dict': {}}, 'x.pth')
    with pytest.raises(CheckpointError, match='expected a dict checkpoint, got list'):
        unwrap_state_dict([torch.ones(1)], 'x.pth')
    with pytest.raises(CheckpointError, match="x.pth: no keys under prefix 'backbone.'"):
        strip_prefix({'a': torch.ones(1)}, 'backbone.', 'x.pth')


# ---------------------------------------------------------------------------- families, loading
class Toy(nn.Module):

    def __init__(self, out_norm: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.blocks = nn.Sequential(nn.Linear(4, 4))
        if out_norm:
            self.norm0 = nn.LayerNorm(4)


def toy_filter(state_dict, prefix='', model=None):
    """Official layout 'conv1.*' / 'layers.*' / 'fc.*' -> Toy's."""
    sd = strip_prefix(state_dict, prefix)
    rename = {'conv1.': 'stem.', 'layers.': 'blocks.'}
    out = {}
    for k, v in sd.items():
        for old, new in rename.items():
            if k.startswith(old):
                out[new + k[len(old):]] = v
    return out


@pytest.fixture
def toy_family():
    family = register_family('toy', toy_filter, 'conv1.weight', optional=r'norm\d\.')
    yield family
    ckpt_mod.FAMILIES.pop('toy')


def official_toy():
    ref = Toy()
    return {'conv1.weight': ref.stem.weight.data, 'conv1.bias': ref.stem.bias.data,
            'layers.0.weight': ref.blocks[0].weight.data, 'layers.0.bias': ref.blocks[0].bias.data,
            'fc.weight': torch.zeros(10, 4)}


def test_family_registry_lookup(toy_family):
    assert get_family('toy') is toy_family
    with pytest.raises(KeyError, match="no checkpoint family 'nope'.*poolformer"):
        get_family('nope')
    # the known families register themselves when their module is imported
    for name in ('poolformer', 'biformer', 'agent_swin', 'slab_swin'):
        assert get_family(name).name == name


@pytest.mark.parametrize('container,prefix', [
    (lambda sd: {'model': sd}, None),
    (lambda sd: {'state_dict': {'backbone.' + k: v for k, v in sd.items()}}, None),
    (lambda sd: {'state_dict': {'module.backbone.' + k: v for k, v in sd.items()}}, 'backbone.'),
])
def test_load_checkpoint_filters_and_reports(toy_family, tmp_path, container, prefix):
    official = official_toy()
    path = str(tmp_path / 'toy.pth')
    torch.save(container(official), path)
    model = Toy()
    report = load_checkpoint(model, path, 'toy', prefix=prefix)
    assert sorted(report.loaded) == ['blocks.0.bias', 'blocks.0.weight', 'stem.bias',
                                     'stem.weight']
    assert report.optional_missing == ['norm0.weight', 'norm0.bias']
    assert report.dropped[-1].endswith('fc.weight') and not report.missing
    assert torch.equal(model.stem.weight, official['conv1.weight'])
    sd, used, _ = filter_checkpoint(container(official), toy_family, prefix)
    assert used == ('' if 'model' in container(official) else 'backbone.')


def test_load_checkpoint_errors_name_file_and_keys(toy_family, tmp_path):
    official = official_toy()
    del official['layers.0.bias']
    official['conv1.weight'] = torch.zeros(8, 3, 1, 1)
    official['layers.1.weight'] = torch.zeros(4, 4)
    path = str(tmp_path / 'bad_toy.pth')
    torch.save(official, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(Toy(), path, 'toy')
    msg = str(e.value)
    assert msg.startswith(path + ' does not fit this Toy')
    assert 'missing keys: blocks.0.bias' in msg and 'unexpected keys: blocks.1.weight' in msg
    assert 'shape mismatches: stem.weight: checkpoint (8, 3, 1, 1) vs model (4, 3, 1, 1)' in msg
    other = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': {'fc.weight': torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match=re.escape(other) + ' holds no toy weights'):
        load_checkpoint(Toy(), other, 'toy')


def test_init_weights_takes_dict_or_list(toy_family, tmp_path):
    from mmengine.model import BaseModule

    class ToyModule(BaseModule):

        def __init__(self, init_cfg=None):
            super().__init__(init_cfg=init_cfg)
            self.stem = nn.Conv2d(3, 4, 1)
            self.blocks = nn.Sequential(nn.Linear(4, 4))
            self.norm0 = nn.LayerNorm(4)

        def init_weights(self):
            ckpt_mod.init_weights(self, 'toy')

    path = str(tmp_path / 'toy.pth')
    official = official_toy()
    torch.save(official, path)
    for init_cfg in (dict(type='Pretrained', checkpoint=path),
                     [dict(type='Constant', layer='LayerNorm', val=3.0),
                      dict(type='Pretrained', checkpoint=path)]):
        model = ToyModule(init_cfg)
        model.init_weights()
        assert torch.equal(model.blocks[0].weight, official['layers.0.weight'])
    assert torch.all(model.norm0.weight == 3.0)
    with pytest.raises(CheckpointError, match='2 Pretrained entries'):
        ToyModule([dict(type='Pretrained', checkpoint=path)] * 2).init_weights()


# ------------------------------------------------------------------------ mmengine's checkpoints
RESUME_SCRIPT = r'''
import sys
import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

import mmattn  # noqa: F401
from mmattn.utils.runner import MMAttnRunner


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((out.squeeze(-1) - torch.stack(labels)) ** 2).mean())
        return out


class ToyData(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3)])

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)), labels=torch.tensor(float(i % 2)))


def runner(work_dir, iters, resume):
    return MMAttnRunner(
        model=ToyModel(), work_dir=work_dir,
        train_dataloader=dict(dataset=ToyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=4)],
        train_cfg=dict(by_epoch=False, max_iters=iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, randomness=dict(seed=0), default_scope='mmengine')


work = sys.argv[1]
runner(work, 2, False).train()
r = runner(work, 4, True)
r.train()
assert r.iter == 4, r.iter
print('RESUMED', r.iter)
'''


@pytest.mark.slow
def test_runner_checkpoints_resume_with_weights_only(tmp_path, no_opt_in):
    """A real (toy) mmengine training saves checkpoints that resume through the safe reader, and
    the classes they need are exactly the allowed ones."""
    script = tmp_path / 'resume.py'
    script.write_text(RESUME_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop(ckpt_mod.UNSAFE_ENV, None)
    res = subprocess.run([sys.executable, str(script), str(tmp_path / 'work')], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and 'RESUMED 4' in res.stdout, res.stderr[-3000:]
    needed = set()
    for name in ('iter_2.pth', 'iter_4.pth'):
        needed |= set(torch.serialization.get_unsafe_globals_in_checkpoint(
            str(tmp_path / 'work' / name)))
    allowed = {ckpt_mod._global_name(g) for g in ckpt_mod.mmengine_safe_globals()}
    assert needed <= allowed, needed - allowed
    # each allowed global is needed: the numpy 1.x aliases by older checkpoints, the dtype
    # classes (rebuilt, not named as globals) by arrays of that dtype
    unused = {n for n in allowed - needed if not n.startswith('numpy.dtypes.')}
    assert unused == {'numpy.core.multiarray._reconstruct', 'numpy.core.multiarray.scalar'}, unused


def test_getattr_is_allowed_for_history_buffer_statistics_only(tmp_path, no_opt_in):
    """The pickled ``getattr`` is HistoryBuffer's; any other use is refused."""
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(2.0)
    path = str(tmp_path / 'hub.pth')
    torch.save({'message_hub': {'loss': buf}}, path)
    assert load_file(path)['message_hub']['loss'].mean() == 2.0

    class GetSize:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    torch.save({'x': GetSize()}, str(tmp_path / 'other.pth'))
    with pytest.raises(CheckpointError, match=r"refusing getattr\(.*'__init__'\)"):
        load_file(str(tmp_path / 'other.pth'))


@pytest.mark.slow
def test_runner_checkpoint_loads_safely_in_a_fresh_process(tmp_path):
    """A HistoryBuffer pickles its statistics as getattr(HistoryBuffer, 'min'); the safe reader
    allows them even before any buffer exists in the loading process (a fresh --resume)."""
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.0)
    torch.save({'message_hub': {'log_scalars': {'loss': buf}}}, tmp_path / 'hub.pth')
    code = ('import mmattn, mmengine.runner\n'
            'from mmattn.utils.checkpoint import load_file\n'
            f'ckpt = load_file({str(tmp_path / "hub.pth")!r})\n'
            "print(ckpt['message_hub']['log_scalars']['loss'].current())\n")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != 'MMATTN_UNSAFE_LOAD'})
    assert res.returncode == 0 and res.stdout.strip().endswith('1.0'), res.stderr[-2000:]


def test_convert_lists_only_keys_really_dropped(tmp_path):
    """Keys a family filter renames (SDANet: selective_attention_i.* -> attentions.i.*) are passed
    on, not 'dropped'; keys of other modules are."""
    from mmattn.testing.parity import load_fixture, state_dict_from_fixture
    from mmattn.utils.checkpoint import convert_checkpoint
    sd = state_dict_from_fixture(load_fixture('SDANet_sda.neck'))
    sd['backbone.conv1.weight'] = torch.zeros(1)
    torch.save({'state_dict': sd}, tmp_path / 'sdanet.pth')
    out = convert_checkpoint('sdanet', str(tmp_path / 'sdanet.pth'))
    assert out['meta']['dropped'] == ['backbone.conv1.weight']
    assert len(out['state_dict']) == len(sd) - 1
