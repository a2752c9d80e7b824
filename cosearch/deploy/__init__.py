"""Using a chosen sub-network: generate or translate with an export, fine-tune it, or
retrain a search's pick from scratch.

Modules: ``generate`` (``cosearch generate`` / ``translate``), ``finetune``
(``cosearch finetune``), ``retrain`` (``cosearch retrain``).
"""
