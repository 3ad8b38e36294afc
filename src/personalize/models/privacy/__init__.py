"""Differentially private models (user-level): noise mechanisms and models trained with them."""
