"""A peer library's models (RecBole) run on exactly our split and scored by our evaluator.

All RecBole compatibility workarounds live in :mod:`.recbole_adapter`; the models behind our
contract are in :mod:`.recbole_models`. Kept import-light: RecBole is imported on first use.
"""
