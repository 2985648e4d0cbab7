"""The PyTorch networks of the examples (architectures as in the issue / the papers)."""

from __future__ import annotations

import torch
from torch import nn


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
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


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
        layers = []
        for h in f:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, 2))
        self.f = nn.Sequential(*layers)

    def logits(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latent = self.phi(features) * mask.unsqueeze(-1)
        return self.f(latent.sum(dim=1))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features, mask), dim=-1)


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
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
