"""Shipped inside every exported model (see :mod:`recsys_scorer` and ``recsys_pyfunc.py``);
these modules import nothing from this package."""
