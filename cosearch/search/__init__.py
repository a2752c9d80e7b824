"""Co-search: Optuna multi-objective search of a supernet with the hardware cost engine.

    from cosearch.search import search
    res = search("runs/tiny", "zcu102", out="search/tiny", objectives="quality,latency,size",
                 latency_max=5.0, trials=300, sampler="nsga2")
"""
from .config import SAMPLERS, SearchConfig
from .study import SearchResult, search

__all__ = ["SAMPLERS", "SearchConfig", "SearchResult", "search"]
