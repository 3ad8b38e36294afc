"""Neural recommenders in PyTorch (NeuMF) and the training utilities they share.

Kept import-light: torch is imported by the model modules, which the registry imports on
first use.
"""
