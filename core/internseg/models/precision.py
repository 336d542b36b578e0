"""Layers whose weights follow their input's dtype.

The original runs the trunk and the resamplers as bf16 modules; a trained copy keeps fp32
master weights in the optimizer (DeepSpeed bf16). Here the module holds the fp32 master and
each use rounds it to the activations' dtype, which is the value the original's bf16 copy
holds. Casting in the layer rather than under autocast keeps the arithmetic the same on every
device (CUDA autocast would also move some elementwise ops to fp32). Weights already stored in
the input's dtype pass through unchanged. Parameter names are those of the torch layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# float64 is for numerical checks only: it makes reduction-order differences (sharded vs one
# process, across CPUs) small enough to compare at a tolerance derived from the arithmetic.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


def parse_dtype(name: str, argument: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{argument} {name!r} not one of {sorted(DTYPES)}")
    return DTYPES[name]


def widened(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32, or in its own dtype if that is wider (float64 checks stay float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _like(param: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    return None if param is None else param.to(x.dtype)


class CastLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _like(self.weight, x), _like(self.bias, x))


class CastConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _like(self.weight, x), _like(self.bias, x))


class CastConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, _like(self.weight, x), _like(self.bias, x), self.stride,
                                  self.padding, self.output_padding, self.groups, self.dilation)
