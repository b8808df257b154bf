"""The one linear-probe head: the features standardized, then one linear layer.

MAE's linear-probe head (He et al. 2022, appendix A.2). It keeps the model linear in the frozen features, and
standardizing them makes the head train in a few epochs where a bare linear layer on raw MARLIN features trains slowly
(their scales and offsets differ a lot). Fine-tuning with a frozen encoder (`finetuning.build_classifier`) and linear
probing on extracted features (`linear_probe.train_linear_probe`) both use it; they differ only in where the
standardization's statistics come from (`ProbeHead`'s `statistics`).
"""

from __future__ import annotations

import torch
from torch import nn

# Where a `ProbeHead`'s standardization gets its statistics.
PROBE_STATISTICS = ("batch", "fixed")


class Standardization(nn.Module):
    """`(features - mean) / std` with fixed statistics: the identity until `fit`."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, min_std: float = 1e-6) -> None:
        """Take the mean and (unbiased) std of `features` (N, hidden), the std at least `min_std`."""
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(min_std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class ProbeHead(nn.Module):
    """Standardization, then the linear layer: (batch, hidden) -> (batch, num_labels).

    Args:
        linear: the linear layer (hidden -> num_labels).
        statistics: "batch": BatchNorm without affine parameters, its running statistics the plain average over every
            training batch seen (fine-tuning, where features come batch by batch); "fixed": the mean and std of the
            whole training set, set once with `norm.fit(features)` (linear probing on extracted features).
        eps: added to the batch variance ("batch" only).

    In eval mode both are a fixed affine map, which `fold()` absorbs into the linear layer.
    """

    def __init__(self, linear: nn.Linear, statistics: str = "batch", eps: float = 1e-6):
        super().__init__()
        if statistics not in PROBE_STATISTICS:
            raise ValueError(f"statistics must be one of {', '.join(PROBE_STATISTICS)}, got {statistics!r}")
        if statistics == "batch":
            # momentum=None: running statistics are the plain average over every training batch seen
            self.norm = nn.BatchNorm1d(linear.in_features, eps=eps, affine=False, momentum=None)
        else:
            self.norm = Standardization(linear.in_features)
        self.linear = linear

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (batch, hidden) -> (batch, num_labels)
        norm = self.norm
        if self.training and isinstance(norm, nn.BatchNorm1d) and len(features) == 1:
            # a last batch of one video has no batch statistics
            normalized = nn.functional.batch_norm(
                features, norm.running_mean, norm.running_var, training=False, eps=norm.eps
            )
            return self.linear(normalized)
        return self.linear(norm(features))

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        """The single `nn.Linear` equal to this head in eval mode (running or fixed statistics)."""
        if isinstance(self.norm, nn.BatchNorm1d):
            mean, scale = self.norm.running_mean, (self.norm.running_var + self.norm.eps).rsqrt()  # (hidden,)
        else:
            mean, scale = self.norm.mean, self.norm.std.reciprocal()
        folded = nn.Linear(self.linear.in_features, self.linear.out_features)
        folded.weight.copy_(self.linear.weight * scale)
        folded.bias.copy_(self.linear.bias - folded.weight @ mean)
        return folded
