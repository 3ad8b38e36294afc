"""Data-subject rights and records that reach across every store: ``personalize subject access``
and ``forget`` (processed data, derived features, the online state and streams, MLflow runs and
registered models), the erasure log, the record of processing and the notice.

The primitives (keys, pseudonyms, the suppression list, consent) live in
:mod:`personalize.data.privacy`; this layer sits beside the reports, above everything it reaches.
"""
