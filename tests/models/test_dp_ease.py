from contract import RecommenderContract


class TestDPEASE(RecommenderContract):
    model_type = "dp_ease"
    params = {"epsilon": 8.0, "l2": 50.0}


class TestDPEASENotPrivate(RecommenderContract):
    model_type = "dp_ease"
    params = {"l2": 50.0, "clip": 3.0}


class TestDPPopularity(RecommenderContract):
    model_type = "dp_popularity"
    params = {"epsilon": 8.0}
