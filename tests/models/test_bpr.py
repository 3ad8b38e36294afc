from contract import IterativeContract


class TestBPR(IterativeContract):
    model_type = "bpr"
    params = {"factors": 16, "iterations": 4}
