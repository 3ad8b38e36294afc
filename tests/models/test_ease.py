from contract import RecommenderContract


class TestEASE(RecommenderContract):
    model_type = "ease"
    params = {"l2": 50.0}
