from contract import RecommenderContract


class TestRecentPopularity(RecommenderContract):
    model_type = "recent_popularity"
    params = {"half_life_days": 10.0}
