"""Item and user features: text of items, item content vectors, user profiles, a vector index.

- :mod:`personalize.features.text`: item texts and their cached sentence embeddings;
- :mod:`personalize.features.items`: genre / year, TF-IDF and dense item vectors;
- :mod:`personalize.features.profiles`: time-decayed, rating-weighted user profiles;
- :mod:`personalize.features.index`: a FAISS index ("more like this", profile retrieval).
"""
