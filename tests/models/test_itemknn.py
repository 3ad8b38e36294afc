from contract import RecommenderContract


class TestItemKNN(RecommenderContract):
    model_type = "itemknn"
    params = {"neighbours": 20, "shrink": 5.0}
