"""The kernel-test harness fails on the errors it exists to catch."""
import pytest
import torch
from _harness import assert_matches, nan_empty


def test_assert_matches_catches_errors_dtypes_and_missing_writes():
    torch.manual_seed(0)
    out, grad = torch.randn(4, 8), torch.randn(4, 8)
    assert_matches('exact', (out, grad), (out, grad), torch.float32)
    with pytest.raises(AssertionError, match='output max relative error'):
        assert_matches('off', (out * (1 + 1e-4), grad), (out, grad), torch.float32)
    with pytest.raises(AssertionError, match='gradient max relative error'):
        assert_matches('off', (out, grad + 1e-3), (out, grad), torch.float32)
    with pytest.raises(AssertionError, match='is torch.float16'):
        assert_matches('dtype', (out.half(), grad), (out, grad), torch.float32)
    # fp16 tolerance: rounding passes, a wrong value does not
    assert_matches('fp16', (out.half(), grad.half()), (out, grad), torch.float16)
    with pytest.raises(AssertionError):
        assert_matches('fp16', ((out * 1.01).half(), grad.half()), (out, grad), torch.float16)
    # a write the kernel forgot leaves NaN, which no tolerance accepts
    partial = nan_empty((4, 8), torch.float32, 'cpu')
    partial[:3] = out[:3]
    with pytest.raises(AssertionError):
        assert_matches('missed write', (partial, grad), (out, grad), torch.float32)
    with pytest.raises(ValueError):  # a missing tensor is an error, not a skipped comparison
        assert_matches('short', (out,), (out, grad), torch.float32)
