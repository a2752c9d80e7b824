"""Tasks and data: readers, the embedded default corpus, the tokenizer, batchers.

The batch iterators need torch; they are imported on first use so that reading and
tokenising stay torch-free.
"""
from .corpus import default_corpus
from .readers import list_splits, read_parallel, read_text, resolve_split
from .tasks import TaskData, build_task_data, split_lm_text
from .tokenizer import Tokenizer, train_or_load_tokenizer

__all__ = ["LMBatches", "TaskData", "Tokenizer", "TranslationBatches", "build_task_data",
           "default_corpus", "list_splits", "read_parallel", "read_text", "resolve_split",
           "split_lm_text", "train_or_load_tokenizer"]


def __getattr__(name: str):
    if name in ("TranslationBatches", "LMBatches"):
        from . import batches
        return getattr(batches, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
