"""Hybrid recommenders: fusion of fitted models (``fusion``) and neural two-tower models.

Kept import-light: each model lives in its own module, imported by the registry on first use.
"""
