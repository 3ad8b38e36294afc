"""The model contract for every RecBole peer (small settings; RecBole trains them)."""

from contract import IterativeContract, RecommenderContract


class TestRecBolePop(RecommenderContract):
    model_type = "recbole_pop"


class TestRecBoleItemKNN(RecommenderContract):
    model_type = "recbole_itemknn"
    params = {"k": 50}


class TestRecBoleEASE(RecommenderContract):
    model_type = "recbole_ease"


class TestRecBoleBPR(IterativeContract):
    model_type = "recbole_bpr"
    epochs_param = "epochs"
    params = {"epochs": 3, "learning_rate": 0.01, "embedding_size": 16}


class TestRecBoleNeuMF(IterativeContract):
    model_type = "recbole_neumf"
    epochs_param = "epochs"
    params = {
        "epochs": 2,
        "learning_rate": 0.01,
        "mf_embedding_size": 8,
        "mlp_embedding_size": 8,
        "mlp_hidden_size": [16],
    }


class TestRecBoleLightGCN(IterativeContract):
    model_type = "recbole_lightgcn"
    epochs_param = "epochs"
    params = {"epochs": 2, "learning_rate": 0.01, "embedding_size": 16}


class TestRecBoleMultiVAE(IterativeContract):
    model_type = "recbole_multivae"
    epochs_param = "epochs"
    params = {"epochs": 3, "learning_rate": 0.01, "latent_dimension": 16, "mlp_hidden_size": [32]}
