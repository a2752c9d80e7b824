"""Shared test settings."""
import os

# pytest-xdist runs two workers on CI's two cores: one torch thread each avoids
# oversubscription, which made training steps ~16x slower on a loaded machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the cost-model tests need no torch
    pass
