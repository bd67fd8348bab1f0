import pytest
import torch

import tangentlens

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_native = pytest.mark.skipif(not tangentlens.NATIVE_AVAILABLE, reason="compiled extension not built")

ALL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# Tolerances of a result computed in float64 and rounded once to the dtype (about one ulp).
ULP_TOL = {
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=8e-3, atol=8e-3),
    torch.float32: dict(rtol=2e-7, atol=2e-7),
    torch.float64: dict(rtol=1e-13, atol=1e-13),
}
