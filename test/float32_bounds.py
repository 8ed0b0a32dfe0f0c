"""Tolerances for comparing two float32 evaluations of one DAP network, derived from rounding.

Not a test module: imported by the parity and export tests. A fixture made on another machine,
or another runtime (onnxruntime), computes the same network with other kernels: oneDNN and MKL
pick AVX-512, AVX2 or SSE4.1 micro-kernels at run time, and each blocks and orders the sums of
a matrix product differently. Only the rounding differs, so the tolerance follows from float32
rounding, not from what one CPU happened to give.

Derivation (`kernel_tolerance`):
- Each float32 addition rounds to nearest with a relative error δ, |δ| <= u = 2**-24, which we
  model as independent and uniform on [-u, u] (std u/sqrt(3); Higham & Mary, "A new approach
  to probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019).
- A sum of K terms accumulates K such errors, each at most u times a partial sum. Partial sums
  are taken to be no larger than M, the largest magnitude of the compared tensor (these
  networks are LayerNorm-ed, so values entering a sum are of the scale of its result; most
  partial sums are far smaller, so this overestimates). One evaluation's error then has
  std <= u * M * sqrt(K / 3); the difference of two independent evaluations,
  u * M * sqrt(2K / 3).
- Stages in series (patch embedding, every matmul, LayerNorm, softmax, conv) each add their own
  independent error, passed on with gain <= 1 (LayerNorm renormalises; the heads end in a
  sigmoid of slope <= 1/4), so variances add: K is the sum of the reduction lengths along the
  computation's longest path (`vit_reduction`, `head_reduction`).
- The bound is LAMBDA = 6 standard deviations: a Gaussian element passes it with probability
  2e-9, so a false failure among the <= 1e5 elements a test compares has odds below 2e-4.

So tolerance = 6 * u * M * sqrt(2 K / 3) ~= 2.45 * eps32 * M * sqrt(K). For the tiny fixture
network this is 7.9e-5 after block 0 (M = 6.2, K = 1930) and 1.8e-5 for the depth output
(M = 0.62, K = 9694). Measured against it: the fixture vs this code under SSE4.1, AVX2 and
AVX-512 oneDNN kernels and ATen's default/AVX2 paths differs by at most 1.8e-6 here and 2.7e-6
on an AVX-512 machine (3.5 % of the bound); a float32 evaluation differs from a float64 one
by at most 5.4e-6 (intermediates) and 1.2e-6 (outputs). Errors counted in K by +-30 % move
the bound by +-15 % (square root). What it still catches, at the outputs: tanh instead of
exact GELU (1.9x the bound), RoPE periods rounded to bf16 (6.9x); LayerNorm eps 1e-6 for
1e-5 (0.09x) is below any rounding bound and is checked on the config instead.
"""

from __future__ import annotations

import math

import numpy as np

from dap_core.model import DAPConfig

UNIT_ROUNDOFF = 2.0**-24  # float32 round-to-nearest: half of np.finfo(np.float32).eps
LAMBDA = 6.0  # standard deviations


def kernel_tolerance(magnitude: float, reduction: int) -> float:
    """Max abs difference allowed between two float32 evaluations (derivation above).

    magnitude: the largest |value| of the compared tensor; reduction: the sum of the
    reduction lengths along the path that computes it.
    """
    if magnitude < 0 or reduction < 1:
        raise ValueError(f"bad magnitude {magnitude} or reduction length {reduction}")
    return LAMBDA * UNIT_ROUNDOFF * magnitude * math.sqrt(2.0 * reduction / 3.0)


def tolerance_for(reference: np.ndarray, reduction: int) -> float:
    """`kernel_tolerance` at the reference tensor's own largest magnitude."""
    return kernel_tolerance(float(np.abs(np.asarray(reference, np.float64)).max()), reduction)


def vit_reduction(config: DAPConfig, tokens: int, blocks: int) -> int:
    """Reduction lengths summed from the input pixels to the output of `blocks` ViT blocks.

    Patch embedding: 3 * p * p products per output. Per block: two LayerNorms (mean and
    variance over C each), qkv (C), q.k (head dim), the softmax denominator and attn.v (N
    tokens each), proj (C), fc1 (C), fc2 (hidden = ffn_ratio * C).
    """
    c, hidden = config.embed_dim, int(config.embed_dim * config.ffn_ratio)
    per_block = 2 * 2 * c + c + config.head_dim + 2 * tokens + c + c + hidden
    return 3 * config.patch_size**2 + blocks * per_block


def head_reduction(config: DAPConfig) -> int:
    """Reduction lengths along a DPT head's longest path, from the last block's tokens.

    Final and adapter LayerNorms (2 x 2C), 1x1 projection (C), the stride-2 3x3 resize conv and
    the 3x3 layer_rn conv of the widest level (9 * widest each), four fusion blocks on the
    main path (two 3x3 residual convs, 9F each, a 1x1 out conv, F, and a 4-tap bilinear
    resize), output_conv1 (9F), the final 4-tap resize, output_conv2's 3x3 (9 * F/2) and 1x1
    (hidden) convs.
    """
    c, f = config.embed_dim, config.head_features
    widest = max(config.head_out_channels)
    fusion = 2 * 9 * f + f + 4
    return 4 * c + c + 2 * 9 * widest + 4 * fusion + 9 * f + 4 + 9 * (f // 2) + config.head_hidden


def output_reduction(config: DAPConfig, tokens: int) -> int:
    """From the input pixels to a head's output map: all blocks the heads read, then the head."""
    return vit_reduction(config, tokens, max(config.layer_indices) + 1) + head_reduction(config)


def grid_tokens(config: DAPConfig, height: int, width: int) -> int:
    """Tokens the attention sums over at an input of height x width: prefix + patch grid."""
    patch = config.patch_size
    return 1 + config.n_storage_tokens + (height // patch) * (width // patch)


def assert_within_rounding(got, expected, reduction: int, what: str = "") -> None:
    """max |got - expected| <= the rounding bound at `expected`'s magnitude."""
    got64 = np.asarray(got, np.float64)
    expected64 = np.asarray(expected, np.float64)
    assert got64.shape == expected64.shape, f"{what}: shape {got64.shape} != {expected64.shape}"
    err, tol = float(np.abs(got64 - expected64).max()), tolerance_for(expected64, reduction)
    assert err <= tol, f"{what}: max abs error {err:.3g} > float32 rounding bound {tol:.3g}"
