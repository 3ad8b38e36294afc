from contract import RecommenderContract


class TestPopularity(RecommenderContract):
    model_type = "popularity"
    params = {}
