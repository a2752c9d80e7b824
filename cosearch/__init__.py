"""cosearch: mixed-precision weight-sharing supernets (optionally MoS) and accelerator co-search.

The layers, bottom up: ``space`` (search spaces and archs) -> ``model`` (the supernet),
``data`` (tasks, tokenizers) and ``hardware`` (the cost engine) -> ``training`` ->
``search`` -> ``export`` -> ``deploy`` (generate, fine-tune, retrain) -> ``demo`` and the
CLI (``commands``). See docs/architecture.md.
"""
from .errors import UserError
from .export import load_exported
from .space import Arch, LayerArch, SearchSpace
from .version import __version__

__all__ = ["Arch", "LayerArch", "SearchSpace", "UserError", "__version__", "load_exported"]
