"""A training term that keeps the MoS routers arch-dependent (``--router-balance W``).

Measured on the H200 Multi30k runs (issue 21): the routers' spread across archs fell back
to its init level after ~300 steps while the experts drifted apart, so the
"architecture-routed" weights barely depended on the arch. This term rewards each MoS
linear for the mutual information between the arch and its experts over ``k`` random
archs per step,

    I = H(mean_a alpha(a)) - mean_a H(alpha(a)),

high when each arch commits to a mixture and different archs commit to different ones
(the load-balancing idea of mixture-of-experts, with archs in place of tokens). The loss
is ``-W * mean over MoS linears of I``; for neuron-wise MoS, I is averaged over neurons.
The archs come from ``(seed, step)``, so every worker and a resumed run use the same.
It touches only the routers and costs one router forward per linear and step.
"""
from __future__ import annotations

import numpy as np
import torch

from ..model.supernet import Supernet

#: random archs per step whose mixtures the term compares
BALANCE_ARCHS = 16


def balance_codes(net: Supernet, seed: int, step: int, k: int = BALANCE_ARCHS) -> torch.Tensor:
    """(k, code) encodings of the step's random archs, on the supernet's device."""
    rng = np.random.default_rng([int(seed), int(step), 0xB0A1])
    codes = net.space.encode_many([net.space.sample(rng) for _ in range(k)])
    return torch.as_tensor(codes, device=next(net.parameters()).device)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def router_mutual_information(net: Supernet, codes: torch.Tensor) -> torch.Tensor | None:
    """Mean over MoS linears of I(arch; expert) for the archs ``codes`` (nats; at most
    log m); None when the supernet has no router."""
    terms = []
    for m in net.elastic_linears():
        if m.router is None:
            continue
        alpha = torch.softmax(m.router(codes).float().view(codes.shape[0], -1, m.experts), dim=-1)
        terms.append((_entropy(alpha.mean(0)) - _entropy(alpha).mean(0)).mean())
    return torch.stack(terms).mean() if terms else None


def balance_loss(net: Supernet, weight: float, seed: int, step: int):
    """A zero-argument callable giving the step's term ``-weight * I`` (None when off or
    without routers): ``sandwich_step`` adds it to the last member's loss."""
    if weight <= 0 or not net.router_parameters():
        return None

    def term() -> torch.Tensor:
        return -weight * router_mutual_information(net, balance_codes(net, seed, step))
    return term
