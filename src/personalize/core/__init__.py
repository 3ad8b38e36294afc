"""The bottom layer: standard column names, errors, paths, metric names, registries.

Everything above imports from here; this package imports nothing else of ``personalize``.
"""
