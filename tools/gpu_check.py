"""GPU verification kit: every GPU number mmattn needs, from one command, inside a time budget.

    python tools/gpu_check.py --out gpu_results                  # CUDA machine, ~7 min
    python tools/gpu_check.py --out /tmp/gpu_dry --dry-run       # CPU: tiny shapes, interpreter

Runs with torch + triton (+ timm, numpy) and mmengine (a pure-Python wheel, carried along; see
README "GPU verification kit"); mmcv / mmdet / mmseg / mmdet3d are not needed. Sections, in this
order (a check is skipped, and listed as skipped with the reason, when the time left in
``--budget-s`` is below its estimated cost; results are rewritten after every check, so a run
that is killed keeps what it measured):

1. ``kernels``: the BRA and SLA Triton kernels against their plain-PyTorch references, outputs
   and input gradients, fp32 / fp16 / bf16 (inputs rounded to the dtype; compared with the
   reference in float64 on the same values, see ``kernel_verdict``), with every kernel output and scratch buffer allocated poisoned with NaN (a missed
   write fails the check): BRA ragged regions, topk 1 and topk = all regions, pooled K/V, q/k and
   v head widths that differ; SLA empty windows, windows of one row, a 2304-row window, head dims
   16 / 64; and NaN / inf inputs, whose positions in the outputs and gradients must be those of
   the reference.
2. ``network``: BiFormer with the Triton backend against the stored official fixture
   (``tests/data/parity/biformer_tiny.dense``, detection backbone, n_win 16) and against the
   reference backend for T / S / B at the detection (n_win 16) and segmentation (n_win 8)
   settings (generated official-layout weights, odd 225x287 input; T also backward), fp32; T
   under autocast fp16 / bf16: Triton and the reference under the same autocast are both
   compared with the fp32 reference; Triton passes within NET_TOL or within REF_FACTOR times
   the autocast reference's own error. Kernel checks likewise compare Triton and the
   same-dtype reference with a float64 reference (within TOL or REF_FACTOR x the reference).
3. ``bench``: forward+backward time and peak memory: BRA Triton vs gather (``reference``) vs
   chunked (``torch``) at BiFormer-S's 800x1344 stage settings (n_win 16, topk 1 / 4 / 16); SLA
   Triton vs chunked at 16k / 100k / 1M rows (forward alone too); the BiFormer-S (800x1344) and
   ScatterFormer (Waymo grid) backbones, forward+backward.

Every number is stored with its shape and dtype in ``--out``: ``gpu_check.json`` and
``gpu_check.md``. Exit status 1 when a check failed (an error, or an error above tolerance).
``--dry-run`` runs the same code on the CPU with tiny shapes under ``TRITON_INTERPRET=1`` (bf16
skipped: the interpreter computes it wrongly) so that the kit cannot rot between GPU loans.
"""
import argparse
import contextlib
import datetime
import json
import math
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# (output, gradient) tolerances of the kernel checks: max |got - expected| / max |expected|
TOL = {'float32': (2e-6, 2e-5), 'float16': (3e-3, 1e-2), 'bfloat16': (2e-2, 5e-2)}
REF_FACTOR = 2.  # or: at most this many times the same-dtype reference's error (vs float64)
# full network, fp32 (the project's parity bar) and under autocast (vs the reference's autocast)
NET_TOL = {'float32': 1e-4, 'float16': 2e-2, 'bfloat16': 5e-2}


class Kit:
    """Runs checks inside the budget and keeps the results (rewritten to ``out`` after each)."""

    def __init__(self, out: str, budget_s: float, dry_run: bool) -> None:
        import torch
        self.out, self.budget_s, self.dry_run = out, budget_s, dry_run
        self.device = 'cpu' if dry_run else 'cuda'
        self.t0 = time.perf_counter()
        self.results: List[Dict[str, Any]] = []
        self.skipped: List[Dict[str, str]] = []
        self.timings: List[Dict[str, Any]] = []
        self.meta: Dict[str, Any] = dict(
            started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            device=(torch.cuda.get_device_name() if self.device == 'cuda'
                    else f'CPU ({platform.processor() or platform.machine()}), '
                    f'{torch.get_num_threads()} threads, TRITON_INTERPRET=1'),
            dry_run=dry_run, budget_s=budget_s, python=platform.python_version(),
            torch=torch.__version__, triton=_version('triton'), mmengine=_version('mmengine'))
        os.makedirs(out, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def deadline(self) -> float:
        return self.t0 + self.budget_s

    def time_ms(self, fn: Callable[[], Any], iters: int, warmup: int) -> float:
        return median_ms(fn, self.device, iters, warmup, self.deadline)

    def peak_mib(self, fn: Callable[[], Any]) -> Optional[float]:
        """Peak memory of one more call, unless the budget is spent."""
        if time.perf_counter() > self.deadline:
            return None
        return peak_mib(fn, self.device)

    def skip(self, section: str, check: str, reason: str) -> None:
        self.skipped.append(dict(section=section, check=check, reason=reason))
        self.write()

    def run(self, section: str, check: str, cost_s: float, fn: Callable[[], None]) -> None:
        """``fn()`` (which calls :meth:`add`) unless fewer than ``cost_s`` seconds are left."""
        left = self.budget_s - self.elapsed()
        if cost_s > left:
            self.skip(section, check, f'time budget: ~{cost_s:.0f} s estimated, '
                      f'{max(left, 0):.0f} s left of --budget-s {self.budget_s:g}')
            return
        start = time.perf_counter()
        try:
            fn()
        except Exception as err:  # one failing check must not stop the kit
            self.add(section, check, '-', '-', ok=False,
                     error=f'{type(err).__name__}: {err}'[:2000],
                     traceback=traceback.format_exc()[-4000:])
        self.timings.append(dict(section=section, check=check,
                                 seconds=round(time.perf_counter() - start, 2)))
        self.write()

    def add(self, section: str, check: str, shape: str, dtype: str, ok: Optional[bool] = None,
            **numbers: Any) -> None:
        """One measured row: its shape and dtype, numbers, and whether it passed (None: a
        measurement without a pass / fail bar)."""
        clean = {k: _finite(v) for k, v in numbers.items()}
        self.results.append(dict(section=section, check=check, shape=shape, dtype=dtype, ok=ok,
                                 **clean))

    def failed(self) -> List[Dict[str, Any]]:
        return [r for r in self.results if r.get('ok') is False]

    def write(self) -> None:
        meta = dict(self.meta, elapsed_s=round(self.elapsed(), 1))
        summary = dict(meta=meta, failed=len(self.failed()), results=self.results,
                       skipped=self.skipped, check_seconds=self.timings)
        with open(osp.join(self.out, 'gpu_check.json'), 'w') as f:
            json.dump(summary, f, indent=1)
        with open(osp.join(self.out, 'gpu_check.md'), 'w') as f:
            f.write(markdown(summary))


def _version(module: str) -> Optional[str]:
    try:
        import importlib.metadata
        return importlib.metadata.version(module)
    except Exception:
        return None


def _finite(value: Any) -> Any:
    """JSON-safe numbers: NaN / inf as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def markdown(summary: Dict[str, Any]) -> str:
    meta = summary['meta']
    lines = [f"# mmattn GPU check{' (dry run)' if meta['dry_run'] else ''}", '',
             f"{meta['device']}; Python {meta['python']}, torch {meta['torch']}, triton "
             f"{meta['triton']}, mmengine {meta['mmengine']}; started {meta['started']}, "
             f"{meta['elapsed_s']} s of --budget-s {meta['budget_s']:g}; "
             f"**{summary['failed']} failed**.", '']
    for section in ('kernels', 'network', 'bench'):
        rows = [r for r in summary['results'] if r['section'] == section]
        if not rows:
            continue
        keys = [k for k in dict.fromkeys(k for r in rows for k in r)
                if k not in ('section', 'check', 'shape', 'dtype', 'ok', 'traceback')]
        lines += [f'## {section}', '',
                  '| check | shape | dtype | ' + ' | '.join(keys) + ' | ok |',
                  '|' + '---|' * (len(keys) + 4)]
        for r in rows:
            cells = [_cell(r.get(k)) for k in keys]
            ok = {True: 'yes', False: '**NO**', None: ''}[r.get('ok')]
            lines.append(f"| {r['check']} | {r['shape']} | {r['dtype']} | "
                         + ' | '.join(cells) + f' | {ok} |')
        lines.append('')
    if summary['skipped']:
        lines += ['## skipped', '', '| section | check | reason |', '|---|---|---|']
        lines += [f"| {s['section']} | {s['check']} | {s['reason']} |"
                  for s in summary['skipped']]
        lines.append('')
    return '\n'.join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.3g}' if (value == 0 or 1e-3 <= abs(value) < 1e5) else f'{value:.2e}'
    return str(value).replace('|', '/').replace('\n', ' ')


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def rel_err(got, expected) -> float:
    """max |got - expected| / max |expected| over tensors (or lists of them); NaN if any NaN."""
    import torch
    if isinstance(got, (list, tuple)):
        return max((rel_err(g, e) for g, e in zip(got, expected)), default=0.)
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if got.numel() == 0:
        return 0.
    diff = (got - expected).abs().max()
    if torch.isnan(diff):
        return float('nan')
    return float(diff / expected.abs().max().clamp_min(1e-30))


def within(err: float, tol: float) -> bool:
    return math.isfinite(err) and err <= tol


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    """Every kernel / chunked-backend output and scratch buffer allocated filled with NaN."""
    import torch
    from mmattn.ops import bra, sla
    from mmattn.ops.bra import chunked as bra_chunked
    from mmattn.ops.sla import chunked as sla_chunked

    def nan_empty(shape, dtype, device):
        return torch.full(shape, float('nan'), dtype=dtype, device=device)

    modules = [bra_chunked, sla_chunked] + [m._triton_impl for m in (bra, sla) if m.HAS_TRITON]
    saved = [(m, m._empty) for m in modules]
    try:
        for m in modules:
            m._empty = nan_empty
        yield
    finally:
        for m, fn in saved:
            m._empty = fn


def sync(device: str) -> None:
    import torch
    if device == 'cuda':
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], Any], device: str, iters: int, warmup: int,
              deadline: Optional[float] = None) -> float:
    """Median milliseconds of ``fn()`` over up to ``iters`` calls after ``warmup``; no new call
    starts after ``deadline`` (``time.perf_counter()`` value) once one has been timed."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(iters):
        if times and deadline is not None and time.perf_counter() > deadline:
            break
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mib(fn: Callable[[], Any], device: str) -> Optional[float]:
    """Most memory allocated at once during ``fn()`` above the level before it (CUDA only)."""
    import torch
    if device != 'cuda':
        return None
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def dtypes(kit: Kit, section: str, names: Sequence[str] = ('float32', 'float16', 'bfloat16')):
    """The dtypes to run; bf16 is skipped (and said so) under the interpreter."""
    for name in names:
        if name == 'bfloat16' and kit.dry_run:
            kit.skip(section, 'bfloat16', 'dry run: the Triton interpreter computes bf16 wrongly')
            continue
        yield name


# ------------------------------------------------------------------------------------------------
# 1. kernels
# ------------------------------------------------------------------------------------------------
# name: (N, S, region h, region w, pooled K/V side or None, qk channels, v channels, heads, topk)
BRA_CASES = {
    'ragged_13x11_topk4': (2, 4, 13, 11, None, 128, 128, 4, 4),
    'topk1': (1, 4, 8, 8, None, 64, 64, 2, 1),
    'topk_all': (1, 4, 7, 9, None, 64, 64, 2, 16),
    'pooled_kv': (1, 4, 9, 12, 3, 64, 64, 2, 4),
    'dv_ne_dqk': (1, 2, 6, 10, None, 32, 64, 2, 2),
}
BRA_DRY = {
    'ragged_3x5': (1, 2, 3, 5, None, 32, 32, 2, 2),
    'topk1': (1, 2, 4, 4, None, 32, 32, 1, 1),
    'topk_all': (1, 2, 3, 3, None, 32, 32, 2, 4),
    'pooled_kv': (1, 2, 4, 6, 2, 32, 32, 2, 3),
}
# name: (rows per window, heads, head dim)
SLA_CASES = {
    'empty_and_single': ([0, 1, 0, 3, 1, 0], 4, 32),
    'many_windows': ([5, 0, 9, 1, 160, 17, 2, 0, 400, 64, 65, 3, 127, 128, 129], 4, 32),
    'window_2304': ([5, 2304, 0, 77], 4, 32),
    'head_dim_16': ([100, 37, 0, 1], 8, 16),
    'head_dim_64': ([100, 0, 250], 2, 64),
}
SLA_DRY = {
    'empty_and_single': ([0, 1, 0, 3, 1, 0], 2, 16),
    'many_windows': ([5, 0, 9, 1, 16, 17, 2, 0, 4, 8, 3, 6], 2, 32),
    'long_window': ([2, 70, 5], 1, 16),
}


def bra_inputs(case: Tuple, dtype, device: str, seed: int = 0):
    """Region-major q, k, v as strided views of one [q | k | v] leaf (pooled K/V for a pooled
    case), routing from region means, an output gradient."""
    import torch
    import torch.nn.functional as F
    from mmattn.ops.bra import topk_routing
    n, s, h, w, pool, cqk, cv, m, topk = case
    r, lq = s * s, h * w
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(n, r, lq, 2 * cqk + cv, generator=g).to(device=device, dtype=dtype)
    grad = torch.randn(n, r, lq, cv, generator=g).to(device=device, dtype=dtype)

    def split(leaf):
        q, k, v = leaf.split([cqk, cqk, cv], dim=-1)
        if pool is not None:
            kv = leaf[..., cqk:].reshape(n * r, h, w, -1).permute(0, 3, 1, 2)
            kv = F.adaptive_avg_pool2d(kv, pool).flatten(2).transpose(1, 2)
            k, v = kv.reshape(n, r, pool * pool, -1).split([cqk, cv], dim=-1)
        return q, k, v

    with torch.no_grad():
        q, k, _ = split(qkv.float())
        r_idx = topk_routing(q.mean(2), k.mean(2), topk, cqk ** -0.5)
    return qkv, split, r_idx, m, cqk ** -0.5, grad


def bra_run(backend: str, qkv, split, r_idx, m, scale, grad):
    import torch
    from mmattn.ops.bra import bra_attention
    leaf = qkv.detach().clone().requires_grad_()
    q, k, v = split(leaf)
    out = bra_attention(q, k, v, r_idx, m, scale, backend=backend)
    (dqkv, ) = torch.autograd.grad(out, leaf, grad.to(out.dtype))
    return out.detach(), dqkv


def kernel_verdict(dtype_name: str, got: Tuple, same: Tuple, truth: Tuple, dtype_ok: bool
                   ) -> dict:
    """Triton's (output, gradient) against the float64 reference (``truth``). An error passes
    when it is within the dtype's tolerance or within ``REF_FACTOR`` times the error of the
    reference backend run in the same dtype (``same``): a kernel is held to the accuracy the
    dtype allows at that reduction length, not to a fixed number."""
    tol_out, tol_grad = TOL[dtype_name]
    e_out, e_grad = rel_err(got[0], truth[0]), rel_err(got[1], truth[1])
    r_out, r_grad = rel_err(same[0], truth[0]), rel_err(same[1], truth[1])
    ok = (dtype_ok and within(e_out, max(tol_out, REF_FACTOR * r_out))
          and within(e_grad, max(tol_grad, REF_FACTOR * r_grad)))
    return dict(ok=ok, err_out=e_out, err_grad=e_grad, ref_err_out=r_out, ref_err_grad=r_grad,
                tol=f'{tol_out:g} / {tol_grad:g} or {REF_FACTOR:g}x ref')


def check_bra(kit: Kit, name: str, case: Tuple, dtype_name: str) -> None:
    import torch
    dtype = getattr(torch, dtype_name)
    qkv, split, r_idx, m, scale, grad = bra_inputs(case, dtype, kit.device)
    with poisoned_outputs():
        out, dqkv = bra_run('triton', qkv, split, r_idx, m, scale, grad)
    truth = bra_run('reference', qkv.double(), split, r_idx, m, scale, grad.double())
    same = bra_run('reference', qkv, split, r_idx, m, scale, grad)
    n, s, h, w, pool, cqk, cv, heads, topk = case
    shape = (f'N{n} R{s * s} L{h * w} Lk{(pool or 0) ** 2 or h * w} Cqk{cqk} Cv{cv} '
             f'heads{heads} topk{topk}')
    kit.add('kernels', f'bra {name}', shape, dtype_name,
            **kernel_verdict(dtype_name, (out, dqkv), same, truth, out.dtype == dtype))


def sla_inputs(case: Tuple, dtype, device: str, seed: int = 0):
    import torch
    from mmattn.ops.sla import cu_seqlens_from_counts
    counts, h, d = case
    n = sum(counts)
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(n, 3, h, d, generator=g).to(device=device, dtype=dtype)
    grad = torch.randn(n, h, d, generator=g).to(device=device, dtype=dtype)
    cu_seqlens = cu_seqlens_from_counts(torch.tensor(counts, dtype=torch.int64)).to(device)
    return qkv, cu_seqlens, grad


def sla_run(backend: str, qkv, cu_seqlens, grad):
    import torch
    from mmattn.ops.sla import scattered_linear_attention
    leaf = qkv.detach().clone().requires_grad_()
    out = scattered_linear_attention(*leaf.unbind(1), cu_seqlens, backend=backend)
    (dqkv, ) = torch.autograd.grad(out, leaf, grad.to(out.dtype))
    return out.detach(), dqkv


def check_sla(kit: Kit, name: str, case: Tuple, dtype_name: str) -> None:
    import torch
    dtype = getattr(torch, dtype_name)
    qkv, cu_seqlens, grad = sla_inputs(case, dtype, kit.device)
    with poisoned_outputs():
        out, dqkv = sla_run('triton', qkv, cu_seqlens, grad)
    truth = sla_run('reference', qkv.double(), cu_seqlens, grad.double())
    same = sla_run('reference', qkv, cu_seqlens, grad)
    counts, h, d = case
    shape = f'N{sum(counts)} windows{len(counts)} (max {max(counts)} rows) H{h} D{d}'
    kit.add('kernels', f'sla {name}', shape, dtype_name,
            **kernel_verdict(dtype_name, (out, dqkv), same, truth, out.dtype == dtype))


def nonfinite_masks(out, dqkv) -> Tuple:
    return out.isnan().cpu(), dqkv.isnan().cpu(), out.isinf().cpu(), dqkv.isinf().cpu()


def check_nan_propagation(kit: Kit, dtype_name: str) -> None:
    """NaN in a query and a key, +inf in a query, -inf in a value: the NaN / inf positions of
    the Triton outputs and gradients must equal the reference's (same dtype)."""
    import torch
    dtype = getattr(torch, dtype_name)
    case = BRA_DRY['ragged_3x5']
    qkv, split, r_idx, m, scale, grad = bra_inputs(case, dtype, kit.device)
    qkv[0, 0, 3, 1] = float('nan')
    qkv[0, 2, 5, 32 + 3] = float('nan')
    qkv[0, 1, 0, 0] = float('inf')
    qkv[0, 3, 7, 64 + 1] = float('-inf')
    got = nonfinite_masks(*bra_run('triton', qkv, split, r_idx, m, scale, grad))
    exp = nonfinite_masks(*bra_run('reference', qkv, split, r_idx, m, scale, grad))
    same = all(torch.equal(a, b) for a, b in zip(got, exp))
    kit.add('kernels', 'bra nan/inf positions', 'N1 R4 L15 C32 heads2 topk2', dtype_name,
            ok=same and bool(exp[0].any()), mismatched=sum(int((a != b).sum())
                                                            for a, b in zip(got, exp)),
            reference_nan=int(exp[0].sum()) + int(exp[1].sum()))
    case = SLA_DRY['many_windows']
    qkv, cu_seqlens, grad = sla_inputs(case, dtype, kit.device)
    qkv[2, 0, 1, 3] = float('nan')
    qkv[40, 1, 0, 5] = float('nan')
    qkv[20, 0, 0, 0] = float('inf')
    qkv[60, 2, 1, 7] = float('-inf')
    got = nonfinite_masks(*sla_run('triton', qkv, cu_seqlens, grad))
    exp = nonfinite_masks(*sla_run('reference', qkv, cu_seqlens, grad))
    same = all(torch.equal(a, b) for a, b in zip(got, exp))
    kit.add('kernels', 'sla nan/inf positions', 'N71 windows12 H2 D32', dtype_name,
            ok=same and bool(exp[0].any()), mismatched=sum(int((a != b).sum())
                                                            for a, b in zip(got, exp)),
            reference_nan=int(exp[0].sum()) + int(exp[1].sum()))


def section_kernels(kit: Kit) -> None:
    from mmattn.ops import bra, sla
    if not (bra.HAS_TRITON and sla.HAS_TRITON):
        kit.skip('kernels', 'all', 'the triton package is not installed')
        return
    bra_cases, sla_cases = (BRA_DRY, SLA_DRY) if kit.dry_run else (BRA_CASES, SLA_CASES)
    block = sla._triton_impl.BLOCK_N
    if kit.dry_run:  # long windows span several programs even on tiny inputs
        sla._triton_impl.BLOCK_N = 16
    try:
        for dtype_name in dtypes(kit, 'kernels'):
            # dry run: the fp32 cases, and two of each in fp16 (the interpreter is slow)
            few = kit.dry_run and dtype_name != 'float32'
            for name, case in list(bra_cases.items())[:2 if few else None]:
                kit.run('kernels', f'bra {name} {dtype_name}', 5,
                        lambda n=name, c=case, d=dtype_name: check_bra(kit, n, c, d))
            for name, case in list(sla_cases.items())[:2 if few else None]:
                kit.run('kernels', f'sla {name} {dtype_name}', 5,
                        lambda n=name, c=case, d=dtype_name: check_sla(kit, n, c, d))
            if dtype_name == 'float32' or not kit.dry_run:
                kit.run('kernels', f'nan/inf {dtype_name}', 5,
                        lambda d=dtype_name: check_nan_propagation(kit, d))
    finally:
        sla._triton_impl.BLOCK_N = block


# ------------------------------------------------------------------------------------------------
# 2. network
# ------------------------------------------------------------------------------------------------
def official_weights(model, seed: int = 0) -> Dict[str, Any]:
    """Generated official-layout weights for every entry of ``model`` (as the parity tests)."""
    from mmattn.testing import generate
    roles = {'running_mean': 'running_mean', 'running_var': 'running_var',
             'num_batches_tracked': 'num_batches_tracked'}
    return {k: generate(k, v.shape, str(v.dtype).replace('torch.', ''),
                        roles.get(k.rsplit('.', 1)[-1], 'param'), seed)
            for k, v in model.state_dict().items()}


def biformer(arch, n_win: int, backend: str, device: str, **kwargs):
    from mmattn.models.backbones.biformer import BiFormer
    model = BiFormer(arch=arch, n_win=n_win, out_indices=(0, 1, 2, 3), backend=backend,
                     **kwargs)
    model.load_official_state_dict(official_weights(model))
    return model.to(device).eval()


def net_fixture(kit: Kit, backend: str = 'triton') -> None:
    import torch
    from mmattn.models.backbones.biformer import convert_biformer_checkpoint
    from mmattn.testing import load_fixture, state_dict_from_fixture
    fx = load_fixture('biformer_tiny.dense')
    model = biformer('tiny', 16, backend, kit.device)
    model.load_official_state_dict(convert_biformer_checkpoint(state_dict_from_fixture(fx)))
    for size, x in fx['inputs'].items():
        with torch.no_grad():
            out = [o.cpu() for o in model(x.to(kit.device))]
        err = rel_err(out, fx['outputs'][size])
        kit.add('network', f'biformer_tiny.dense fixture, {backend}', f'1x3x{size} n_win16',
                'float32', ok=within(err, NET_TOL['float32']), err=err,
                tol=NET_TOL['float32'])


def net_vs_reference(kit: Kit, arch, setting: str, n_win: int, size: Tuple[int, int],
                     backward: bool, dtype_name: str = 'float32', **kwargs) -> None:
    """Triton backend against the reference backend, same weights. In float32 the two must
    agree to NET_TOL. Under autocast both are compared with the float32 reference: Triton's
    error must be within NET_TOL or within REF_FACTOR times the autocast reference's error (a
    half-precision network drifts by more than a fixed bar; the kernel must not add to it)."""
    import torch
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(kit.device)
    autocast = dtype_name != 'float32'
    results = {}
    runs = [('reference', autocast), ('triton', autocast)]
    if autocast:
        runs.append(('float32', False))
    for backend, amp in runs:
        model = biformer(arch, n_win, 'reference' if backend == 'float32' else backend,
                         kit.device, **kwargs)
        if backward:
            model.train()
            for mod in model.modules():  # BatchNorm in eval: batch statistics of one image
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        xi = x.clone().requires_grad_(backward)
        with torch.autocast(kit.device, dtype=getattr(torch, dtype_name), enabled=amp):
            with torch.set_grad_enabled(backward):
                outs = model(xi)
        grads = []
        if backward:
            w = [torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o) for o in outs]
            sum((o.float() * wi).sum() for o, wi in zip(outs, w)).backward()
            grads = [xi.grad] + [p.grad for p in model.parameters() if p.grad is not None]
        results[backend] = ([o.detach().float() for o in outs], grads)
        del model
    tol = NET_TOL[dtype_name]
    e_out = rel_err(results['triton'][0], results['reference'][0])
    numbers = dict(err_out=e_out)
    ok = within(e_out, tol)
    if autocast:
        e_tri = rel_err(results['triton'][0], results['float32'][0])
        e_ref = rel_err(results['reference'][0], results['float32'][0])
        numbers.update(err_vs_fp32=e_tri, ref_err_vs_fp32=e_ref)
        ok = within(e_tri, max(tol, REF_FACTOR * e_ref))
        tol = f'{tol:g} or {REF_FACTOR:g}x ref'
    if backward:
        e_grad = rel_err(results['triton'][1], results['reference'][1])
        numbers['err_grad'] = e_grad
        ok = ok and within(e_grad, tol) and len(results['triton'][1]) == len(
            results['reference'][1])
    name = arch if isinstance(arch, str) else 'reduced (1,1,1,1 blocks)'
    kit.add('network', f'biformer {name} {setting}: triton vs reference'
            + (' fwd+bwd' if backward else ''),
            f'1x3x{size[0]}x{size[1]} n_win{n_win}', dtype_name + (' autocast' if autocast
                                                                     else ''),
            ok=ok, tol=tol, **numbers)


def section_network(kit: Kit) -> None:
    try:
        import mmattn.models.backbones.biformer  # noqa: F401  (needs mmengine, timm)
    except ImportError as err:
        kit.skip('network', 'all', f'BiFormer does not import: {err}')
        return
    if kit.dry_run:
        kit.skip('network', 'triton on the fixture and T/S/B', 'dry run: full networks take '
                 'minutes per forward under the interpreter; the fixture runs on the torch '
                 'backend and a reduced geometry on triton instead')
        kit.run('network', 'tiny fixture (torch backend)', 20, lambda: net_fixture(kit, 'torch'))
        reduced = dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 256, 512))
        kit.run('network', 'reduced fwd+bwd', 30, lambda: net_vs_reference(
            kit, reduced, 'n_win 2', 2, (42, 58), True, topks=(1, 2, 4, -2)))
        return
    kit.run('network', 'tiny fixture', 15, lambda: net_fixture(kit))
    kit.run('network', 'tiny det fwd+bwd', 20,
            lambda: net_vs_reference(kit, 'tiny', 'det', 16, (225, 287), True))
    for arch in ('tiny', 'small', 'base'):
        for setting, n_win in (('det', 16), ('seg', 8)):
            kit.run('network', f'{arch} {setting}', 15,
                    lambda a=arch, s=setting, w=n_win: net_vs_reference(kit, a, s, w, (225, 287),
                                                                        False))
    for dtype_name in ('float16', 'bfloat16'):
        kit.run('network', f'tiny det autocast {dtype_name}', 15,
                lambda d=dtype_name: net_vs_reference(kit, 'tiny', 'det', 16, (225, 287), False,
                                                      d))


# ------------------------------------------------------------------------------------------------
# 3. benchmarks
# ------------------------------------------------------------------------------------------------
# BiFormer-S routing-attention stages: (width, heads, topk)
BRA_STAGES = {0: (64, 2, 1), 1: (128, 4, 4), 2: (256, 8, 16)}


def bra_stage_case(size: Tuple[int, int], stage: int, n_win: int) -> Tuple:
    """BRA_CASES-style tuple of BiFormer-S stage ``stage`` at input ``size`` (auto_pad)."""
    h, w = size
    for _ in range(stage + 2):  # stem (stride 4) then one stride-2 downsample per stage
        h, w = (h + 1) // 2, (w + 1) // 2
    dim, heads, topk = BRA_STAGES[stage]
    topk = min(topk, n_win * n_win)  # tiny dry-run maps have fewer regions than topk
    return (1, n_win, -(-h // n_win), -(-w // n_win), None, dim, dim, heads, topk)


def bench_bra(kit: Kit, stage: int, size: Tuple[int, int], n_win: int, dtype_name: str,
              backends: Sequence[str], iters: int, warmup: int) -> None:
    import torch
    case = bra_stage_case(size, stage, n_win)
    qkv, split, r_idx, m, scale, grad = bra_inputs(case, getattr(torch, dtype_name), kit.device)
    leaf = qkv.requires_grad_()

    def step(backend: str, backward: bool = True):
        from mmattn.ops.bra import bra_attention
        q, k, v = split(leaf)
        out = bra_attention(q, k, v, r_idx, m, scale, backend=backend)
        if backward:
            out.backward(grad)
            leaf.grad = None

    n, s, h, w, _, c, _, heads, topk = case
    shape = (f'BiFormer-S stage {stage} @ {size[0]}x{size[1]} n_win{n_win}: R{s * s} x L{h * w} '
             f'C{c} heads{heads} topk{topk}')
    times = {}
    for backend in backends:
        with torch.no_grad():
            fwd = kit.time_ms(lambda: step(backend, False), iters, warmup)
        both = kit.time_ms(lambda: step(backend), iters, warmup)
        times[backend] = both
        kit.add('bench', f'bra {backend}', shape, dtype_name, fwd_ms=fwd, fwd_bwd_ms=both,
                peak_mib=kit.peak_mib(lambda: step(backend)),
                speedup_vs_gather=(times['reference'] / both if 'reference' in times else None))


def sla_bench_counts(n: int, max_rows: int = 2304, median_rows: float = 120.,
                     sigma: float = 1.2, seed: int = 0) -> List[int]:
    """Rows per window, lognormal clipped to [1, max_rows], summing to ``n`` (seeded)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    counts: List[int] = []
    total = 0
    while total < n:
        draw = torch.empty(4096).log_normal_(math.log(median_rows), sigma, generator=g)
        for c in draw.round().clamp(1, max_rows).long().tolist():
            counts.append(min(c, n - total))
            total += counts[-1]
            if total == n:
                break
    return counts


def bench_sla(kit: Kit, n: int, dtype_name: str, backends: Sequence[str], iters: int,
              warmup: int, max_rows: int = 2304) -> None:
    import torch
    from mmattn.ops.sla import scattered_linear_attention
    counts = sla_bench_counts(n, max_rows)
    qkv, cu_seqlens, grad = sla_inputs((counts, 4, 32), getattr(torch, dtype_name), kit.device)
    leaf = qkv.requires_grad_()

    def step(backend: str, backward: bool = True):
        out = scattered_linear_attention(*leaf.unbind(1), cu_seqlens, backend=backend)
        if backward:
            out.backward(grad)
            leaf.grad = None

    shape = (f'N{n} windows{len(counts)} (mean {n / len(counts):.0f}, max {max(counts)} rows) '
             'H4 D32')
    for backend in backends:
        with torch.no_grad():
            fwd = kit.time_ms(lambda: step(backend, False), iters, warmup)
        both = kit.time_ms(lambda: step(backend), iters, warmup)
        kit.add('bench', f'sla {backend}', shape, dtype_name, fwd_ms=fwd, fwd_bwd_ms=both,
                peak_mib=kit.peak_mib(lambda: step(backend)))


def bench_biformer(kit: Kit, arch, size: Tuple[int, int], n_win: int, backend: str,
                   dtype_name: str, iters: int, warmup: int, **kwargs) -> None:
    import torch
    model = biformer(arch, n_win, backend, kit.device, **kwargs).train()
    x = torch.randn(1, 3, *size, device=kit.device)
    autocast = dtype_name != 'float32'

    def step():
        with torch.autocast(kit.device, dtype=getattr(torch, dtype_name), enabled=autocast):
            outs = model(x)
        sum(o.float().mean() for o in outs).backward()
        model.zero_grad(set_to_none=True)

    ms = kit.time_ms(step, iters, warmup)
    name = arch if isinstance(arch, str) else 'reduced'
    kit.add('bench', f'biformer-{name} backbone fwd+bwd {backend}',
            f'1x3x{size[0]}x{size[1]} n_win{n_win}',
            dtype_name + (' autocast' if autocast else ''), fwd_bwd_ms=ms,
            peak_mib=kit.peak_mib(step))


def synthetic_points(n: int, radius: float, seed: int = 0):
    """A LiDAR-like sweep: ``n`` points uniform over a disc of ``radius`` m, z in [-1.8, 3.8] m,
    tanh intensity / elongation."""
    import torch
    g = torch.Generator().manual_seed(seed)
    r = radius * torch.rand(n, generator=g).sqrt()
    phi = 2 * math.pi * torch.rand(n, generator=g)
    z = torch.rand(n, generator=g) * 5.6 - 1.8
    feats = torch.tanh(torch.rand(n, 2, generator=g) * 3)
    return torch.cat([torch.stack([r * phi.cos(), r * phi.sin(), z], 1), feats], 1)


def bench_scatterformer(kit: Kit, backend: str, iters: int, warmup: int) -> None:
    import torch
    from mmattn.models.backbones.scatterformer import ScatterFormerBackbone
    if kit.dry_run:
        kwargs = dict(point_cloud_range=[-6.4, -6.4, -2.0, 6.4, 6.4, 4.0],
                      voxel_size=[0.32, 0.32, 0.1875], dim=16, num_heads=1, depths=(1, 1),
                      win_size=8, pool_heads=1)
        points, radius = 40, 6.
    else:  # Waymo settings (the official config)
        kwargs = {}
        points, radius = 150_000, 75.
    model = ScatterFormerBackbone(sla_backend=backend, **kwargs).to(kit.device).train()
    pts = [synthetic_points(points, radius, seed=b).to(kit.device) for b in range(2)]

    def step():
        model(pts).square().mean().backward()
        model.zero_grad(set_to_none=True)

    ms = kit.time_ms(step, iters, warmup)
    kit.add('bench', f'scatterformer backbone fwd+bwd sla={backend}',
            f'2 x {points} points, r {radius:g} m, grid {tuple(model.sparse_shape)}', 'float32',
            fwd_bwd_ms=ms, peak_mib=kit.peak_mib(step))


def section_bench(kit: Kit) -> None:
    if kit.dry_run:
        iters, warmup = 1, 0
        bra_size, bra_nwin, bra_backends = (64, 48), 2, ('reference', 'torch', 'triton')
        sla_sizes, sla_backends = (200, ), ('torch', 'triton')
        net_dtypes = ('float32', )
    else:
        iters, warmup = 5, 2
        bra_size, bra_nwin, bra_backends = (800, 1344), 16, ('reference', 'torch', 'triton')
        sla_sizes, sla_backends = (16_384, 100_000, 1_000_000), ('torch', 'triton')
        net_dtypes = ('float32', 'bfloat16')
    for dtype_name in dtypes(kit, 'bench', ('float32', 'bfloat16')):
        for stage in (0, 1, 2):
            kit.run('bench', f'bra stage {stage} {dtype_name}', 3 if kit.dry_run else 20,
                    lambda s=stage, d=dtype_name: bench_bra(kit, s, bra_size, bra_nwin, d,
                                                            bra_backends, iters, warmup))
        for n in sla_sizes:
            cost = 3 if kit.dry_run else (10 if n < 500_000 else 60)
            kit.run('bench', f'sla {n} rows {dtype_name}', cost,
                    lambda n=n, d=dtype_name: bench_sla(kit, n, d, sla_backends, iters, warmup,
                                                        64 if kit.dry_run else 2304))
    try:
        import mmattn.models.backbones.biformer  # noqa: F401
        import mmattn.models.backbones.scatterformer  # noqa: F401
    except ImportError as err:
        kit.skip('bench', 'backbones', f'backbones do not import: {err}')
        return
    for dtype_name in net_dtypes:
        for backend in ('triton', 'torch'):
            if kit.dry_run and backend == 'triton':
                kit.skip('bench', 'biformer reduced triton', 'dry run: the network section runs '
                         'this model with the Triton backend already')
            elif kit.dry_run:
                kit.run('bench', f'biformer reduced {backend}', 5, lambda b=backend: (
                    bench_biformer(kit, dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 256, 512)),
                                   (42, 58), 2, b, 'float32', iters, warmup,
                                   topks=(1, 2, 4, -2))))
            else:
                kit.run('bench', f'biformer-S {backend} {dtype_name}', 40,
                        lambda b=backend, d=dtype_name: bench_biformer(
                            kit, 'small', (800, 1344), 16, b, d, iters, warmup))
    for backend in ('triton', 'torch'):
        kit.run('bench', f'scatterformer {backend}', 10 if kit.dry_run else 60,
                lambda b=backend: bench_scatterformer(kit, b, iters if kit.dry_run else 3,
                                                      warmup if kit.dry_run else 1))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='folder for gpu_check.json / gpu_check.md')
    parser.add_argument('--budget-s', type=float, default=420.,
                        help='stop starting checks that would not fit in this many seconds')
    parser.add_argument('--dry-run', action='store_true',
                        help='CPU, tiny shapes, Triton interpreter (CI)')
    parser.add_argument('--sections', nargs='+', default=['kernels', 'network', 'bench'],
                        choices=['kernels', 'network', 'bench'])
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ['TRITON_INTERPRET'] = '1'  # before any @triton.jit kernel is defined
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        print('gpu_check: no CUDA device; use --dry-run for the CPU rehearsal', file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references in IEEE fp32
    torch.backends.cudnn.allow_tf32 = False
    kit = Kit(args.out, args.budget_s, args.dry_run)
    sections = dict(kernels=section_kernels, network=section_network, bench=section_bench)
    for name in args.sections:
        sections[name](kit)
    kit.write()
    failed = kit.failed()
    print(f'gpu_check: {len(kit.results)} rows, {len(failed)} failed, {len(kit.skipped)} skipped, '
          f'{kit.elapsed():.0f} s; {osp.join(args.out, "gpu_check.md")}')
    for row in failed:
        print(f"FAILED {row['section']} / {row['check']} ({row['shape']}, {row['dtype']}): "
              f"{row.get('error') or {k: row.get(k) for k in ('err_out', 'err_grad', 'err')}}")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
