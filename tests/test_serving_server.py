"""``mlflow models serve`` on the registered champion: answers the README's request, refuses
malformed requests with HTTP 400 and a clear message, and keeps serving."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import mlflow
import pytest
import requests

from personalize.config.serving import ExportConfig
from personalize.serving import Candidate, export_champion
from personalize.serving.export import EXAMPLE_REQUEST
from servers import model_server

ROOT = Path(__file__).parents[1]
NAME = "served-recommender"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, _mlflow_template, ml100k_small):
    db = tmp_path_factory.mktemp("serve") / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    result = export_champion(
        [Candidate("ease", "ease", {"l2": 100.0}, 0.1), Candidate("popularity", "popularity", {}, 0.05)],
        dataset=ml100k_small,
        config=ExportConfig(registered_model=NAME),
        experiment="serving-test",
        tracking_uri=uri,
        progress=False,
        echo=None,
    )
    return uri, result


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    """The scoring server on a free port; the whole process group is stopped at the end."""
    uri, _ = champion
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with model_server(f"models:/{NAME}@champion", uri, log) as base:
        yield base


def _post(base: str, body) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else None
    return requests.post(
        f"{base}/invocations",
        json=None if data is not None else body,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_the_readme_request_is_answered_as_in_process(server, champion):
    uri, result = champion
    response = _post(server, EXAMPLE_REQUEST)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    mlflow.set_tracking_uri(uri)
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    expected = [
        p.model_dump() for p in local.predict(EXAMPLE_REQUEST["inputs"], params=EXAMPLE_REQUEST["params"])
    ]
    assert rows == expected
    known = set(result.model.index_.users.tolist())
    for row in rows:
        assert row["personalised"] == (row["user_id"] in known)
    assert [r["rank"] for r in rows if r["user_id"] == 100001] == [1, 2, 3]
    assert 302 not in [r["item_id"] for r in rows if r["user_id"] == 186]


def test_readme_shows_the_same_request():
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "/invocations" in b]
    if not blocks:
        pytest.skip("README has no serving section yet")
    import json

    payload = re.search(r"-d '(\{.*?\})'", blocks[0], re.S)
    assert payload and json.loads(payload.group(1)) == EXAMPLE_REQUEST
    assert "MLFLOW_TRACKING_URI" in readme.split(blocks[0])[0][-2000:] + blocks[0]


BAD = [
    ({"inputs": [{"k": 5}]}, "user_id"),  # missing column
    ({"inputs": [{"user_id": 196, "k": "five"}]}, "valid integer"),  # wrong type
    ({"inputs": [{"user_id": 1.5}]}, "user_id"),
    ({"inputs": [{"user_id": "196"}]}, "valid integer"),  # this model's user IDs are integers
    ({"inputs": [{"user_id": 196, "k": -3}]}, "k must be between 1 and 1000"),
    ({"inputs": [{"user_id": 196, "k": 10**9}]}, "k must be between 1 and 1000"),
    ({"inputs": [{"user_id": 196}], "params": {"k": 0}}, "k must be between 1 and 1000"),
    ({"inputs": [{"user_id": 196, "country": "FR"}]}, "country"),  # unknown column
    ({"inputs": [{"user_id": 196, "exclude_items": "50"}]}, "exclude_items"),
    ({"inputs": {"user_id": 196}}, "Expected list"),
    ({"dataframe_records": [{"user_id": 196}]}, "inputs"),
    ("{not json", "valid JSON"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m for _, m in BAD])
def test_malformed_requests_get_400_with_a_clear_message(server, body, message):
    response = _post(server, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_the_server_keeps_serving_after_bad_requests(server):
    for body, _ in BAD:
        _post(server, body)
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
    response = _post(server, {"inputs": [{"user_id": 196, "k": 2}]})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2
