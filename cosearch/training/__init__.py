"""Training a supernet and reading its run folder back.

Modules: ``train`` (the training loop, ``cosearch train``), ``sandwich`` (which members a
step trains and their losses), ``ray_train`` (the same loop under Ray Train's DDP),
``checkpoint`` (safe checkpoints), ``rundir`` (a run folder's config and files),
``evaluate`` (inherited-weight quality of sub-networks, ``cosearch eval``).
"""
