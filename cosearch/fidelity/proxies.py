"""Zero-cost proxies: what ranks archs with no training at all.

A supernet only earns its keep where it ranks better than these. Every value is "bigger
predicts better" (lower loss): parameters, exported weight size in MB, MACs of one
prefill of ``seq_len`` tokens (from the cost engine's workload graph, the same for every
accelerator), and the decoder's non-embedding parameters (LiteTransformerSearch: the
proxy to beat on decoder-only language models). Torch-free.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..hardware import cost_batch
from ..space import Arch, SearchSpace

PROXIES = ("params", "weight_mb", "macs", "decoder_params")
#: any preset: MACs do not depend on the accelerator
MACS_HW = "zcu102"


def decoder_params(space: SearchSpace, arch: Arch) -> int:
    """Non-embedding decoder parameters (weights and biases of its linear layers)."""
    return sum(lin.params for lin in space.linears(arch) if lin.side == "decoder")


def proxy_values(space: SearchSpace, archs: Sequence[Arch], seq_len: int = 30) -> dict[str, list[float]]:
    """Each proxy's value per arch (same order as ``archs``)."""
    macs = cost_batch(space, list(archs), MACS_HW, scenario="prefill", seq_len=seq_len)["macs"]
    return {"params": [float(space.param_count(a)) for a in archs],
            "weight_mb": [space.weight_size_bits(a) / 8e6 for a in archs],
            "macs": [float(m) for m in np.asarray(macs)],
            "decoder_params": [float(decoder_params(space, a)) for a in archs]}
