"""Content-based recommenders: users described by the content of the items they chose."""
