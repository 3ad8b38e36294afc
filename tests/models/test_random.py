from contract import RecommenderContract


class TestRandomRecommender(RecommenderContract):
    model_type = "random"
    params = {}
    beats_random = False
