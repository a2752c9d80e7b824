"""Co-search: Optuna multi-objective search of a supernet with the hardware cost engine.

    from cosearch.search import search
    res = search("runs/tiny", "zcu102", out="search/tiny", objectives="quality,latency,size",
                 latency_max=5.0, trials=300, sampler="nsga2")
"""
from .study import SAMPLERS, SearchResult, search

__all__ = ["SAMPLERS", "SearchResult", "search"]
