"""The PyTorch networks of the examples (architectures as in the issue / the papers)."""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """Training-time input standardisation, folded into the next Linear before export.

    Training on (x - mean) / std converges much faster than on the raw recipe inputs
    (pT/1700 ~ 0.01, angles ~ 0.1); :meth:`fold_into` then rewrites the first Linear layer
    as W' = W / std, b' = b - W' mean, so the exported network takes the raw recipe inputs
    and is a plain chain of Gemm/ReLU nodes.
    """

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.active = False

    def set(self, mean, std) -> None:
        std = torch.as_tensor(std, dtype=torch.float32)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.active = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.active else x

    @torch.no_grad()
    def fold_into(self, linear: nn.Linear) -> None:
        if not self.active:
            return
        w = linear.weight / self.std  # (out, in) / (in,)
        linear.bias.sub_(w @ self.mean)
        linear.weight.copy_(w)
        self.active = False


class TopoDNN(nn.Module):
    """TopoDNN (arXiv:2210.04371): 90 -> 300 -> 102 -> 12 -> 6 -> 1, ReLU, sigmoid output.

    ``forward`` returns the sigmoid score (N, 1); ``logits`` is used for training.
    """

    def __init__(self, n_inputs: int = 90, hidden=(300, 102, 12, 6)):
        super().__init__()
        layers, last = [], n_inputs
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, 1))
        self.norm = Standardize(n_inputs)
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def fold_normalization(self) -> None:
        self.norm.fold_into(self.net[0])


class PFN(nn.Module):
    """Particle Flow Network (deep set, arXiv:1810.05165).

    Phi: 3 -> 100 -> 100 -> 64 per particle (ReLU), masked sum over particles,
    F: 64 -> 100 -> 100 -> 2 (ReLU), softmax. ``forward(features, mask)`` returns the
    class probabilities (N, 2), column 1 = signal.
    """

    def __init__(self, n_features: int = 3, phi=(100, 100, 64), f=(100, 100)):
        super().__init__()
        layers, last = [], n_features
        for h in phi:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        self.phi = nn.Sequential(*layers)
        self.norm = Standardize(n_features)
        layers = []
        for h in f:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, 2))
        self.f = nn.Sequential(*layers)

    def logits(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latent = self.phi(self.norm(features)) * mask.unsqueeze(-1)
        return self.f(latent.sum(dim=1))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features, mask), dim=-1)

    def fold_normalization(self) -> None:
        self.norm.fold_into(self.phi[0])


class AutoEncoder(nn.Module):
    """Dense autoencoder on the TopoDNN inputs: 90 -> 32 -> 8 -> 32 -> 90 (ReLU inside,
    linear output). ``forward(x)`` returns the reconstruction (N, 90)."""

    def __init__(self, n_inputs: int = 90, hidden=(32, 8, 32)):
        super().__init__()
        layers, last = [], n_inputs
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, n_inputs))
        self.norm = Standardize(n_inputs)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))

    def fold_normalization(self) -> None:
        self.norm.fold_into(self.net[0])
