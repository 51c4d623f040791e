"""timm ViT plumbing shared by the edge and the server: ``loading`` (a timm model with its weights,
``weights_only``) and ``internals`` (what sagebench reads from a ViT: patch grid, prefix tokens, positions).

The edge and server models themselves live in :mod:`sagebench.edge` and :mod:`sagebench.server`.
Nothing is imported here, so reading a ViT's internals does not load the weight-loading machinery.
"""
