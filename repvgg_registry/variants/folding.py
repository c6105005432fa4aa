"""The maths of structural re-parameterization, in float64 numpy, independent of Keras and PyTorch.

Per branch, with ``std = sqrt(running_var + eps)``: kernel ``W * gamma / std`` and bias
``beta - running_mean * gamma / std``. The 1x1 kernel is zero-padded to 3x3 (weight at the
centre); the identity branch is a 3x3 kernel with 1 at ``[1, 1, i % (C / groups), i]``. The three
are summed. Everything is folded in float64 and cast once by the caller, so that fusion adds no
rounding beyond float32's own. Kernels are HWIO (Keras' layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _f64(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class BatchNormStats:
    """BatchNorm parameters in float64."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @classmethod
    def from_layer(cls, bn) -> BatchNormStats:
        """From a Keras ``BatchNormalization`` layer (gamma, beta, moving mean and variance)."""
        return cls(_f64(bn.gamma), _f64(bn.beta), _f64(bn.moving_mean), _f64(bn.moving_variance), float(bn.epsilon))

    def fold(self, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fold BN into an HWIO kernel: returns (kernel, bias), both float64."""
        scale = self.gamma / np.sqrt(self.var + self.eps)
        return kernel * scale, self.beta - self.mean * scale


def pad_1x1_to_3x3(kernel: np.ndarray) -> np.ndarray:
    """Zero-pad an HWIO 1x1 kernel to 3x3 with the weight at the centre."""
    out = np.zeros((3, 3) + kernel.shape[2:], dtype=np.float64)
    out[1, 1] = kernel[0, 0]
    return out


def identity_kernel(channels: int, groups: int) -> np.ndarray:
    """The identity as a (grouped) 3x3 HWIO kernel: 1 at ``[1, 1, i % (C/groups), i]``."""
    per_group = channels // groups
    kernel = np.zeros((3, 3, per_group, channels), dtype=np.float64)
    for i in range(channels):
        kernel[1, 1, i % per_group, i] = 1.0
    return kernel


def fuse_branches(
    kernel_3x3: np.ndarray,
    bn_3x3: BatchNormStats,
    kernel_1x1: np.ndarray,
    bn_1x1: BatchNormStats,
    bn_identity: BatchNormStats | None,
    groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the folded branches of one block into a single 3x3 (kernel, bias) in float64."""
    k3, b3 = bn_3x3.fold(_f64(kernel_3x3))
    k1, b1 = bn_1x1.fold(pad_1x1_to_3x3(_f64(kernel_1x1)))
    kernel, bias = k3 + k1, b3 + b1
    if bn_identity is not None:
        ki, bi = bn_identity.fold(identity_kernel(kernel.shape[-1], groups))
        kernel, bias = kernel + ki, bias + bi
    return kernel, bias
