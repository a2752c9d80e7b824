"""The supernet model: transformer modules with elastic widths, the mixture-of-supernets
router, quantizers, the fused weight path and compiled members.

Modules: ``modules`` (layers and the plain ``Transformer``), ``supernet`` (a space's
weight-sharing supernet and sub-network extraction), ``quant`` (weight and activation
quantizers), ``fused`` (router mixture and fake quantization in one op), ``compiled_members``
(the sandwich's fixed members under ``torch.compile``).

Nothing is imported here, so ``import cosearch.model`` costs nothing until a module is used.
"""
