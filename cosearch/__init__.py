"""cosearch: mixed-precision mixture-of-supernets and accelerator co-search."""
from .errors import UserError
from .export import load_exported
from .space import Arch, LayerArch, SearchSpace

__all__ = ["Arch", "LayerArch", "SearchSpace", "UserError"]
__version__ = "0.1.0"
