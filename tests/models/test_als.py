from contract import IterativeContract


class TestALS(IterativeContract):
    model_type = "als"
    params = {"factors": 16, "iterations": 4}
