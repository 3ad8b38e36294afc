"""Item and user features: text of items, dense and sparse item vectors, profiles, indexes."""
