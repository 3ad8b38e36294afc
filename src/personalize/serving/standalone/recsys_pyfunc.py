"""The MLflow model of an exported recommender (a model from code).

MLflow runs this file when the model is logged and when it is loaded; the scoring package
(``personalize.scoring``, the code the models score with) is shipped beside it as
``recsys_scoring`` (``code_paths``) and the fitted state as the artifact ``state``. Nothing here
needs the code that trained the model.

Request: a list of rows ``{"user_id": ..., "k": optional int, "exclude_items": optional list}``
(and optionally the user's attributes ``age``, ``gender``, ``occupation``, ``zip_code``: with a
state exported with segments, a cold or unknown user's segment comes from them) and optionally
``params = {"k": int}`` (the k of rows that give none). IDs have the type the
training data gave them (integers or strings; the model config ``user_id_type`` /
``item_id_type`` set at export). Unknown fields, a missing ``user_id`` or a value of the wrong type
are rejected by the signature (validated against :class:`RecommendationRequest`), a k out of range
by the scorer; both answer HTTP 400 when served. Response: one row per recommendation
``{"user_id", "item_id", "rank", "score", "personalised", "segment"}`` (``segment``: the row's
segment when the state carries segments and the row has one, else null).
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import pydantic
import recsys_scoring
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

_ID_TYPES = {"int": int, "str": str}
ATTRIBUTES = ("age", "gender", "occupation", "zip_code")
_config = mlflow.models.ModelConfig(development_config={"user_id_type": "int", "item_id_type": "int"})
UserId = _ID_TYPES[_config.get("user_id_type")]
ItemId = _ID_TYPES[_config.get("item_id_type")]


class RecommendationRequest(pydantic.BaseModel):
    """One request row."""

    model_config = pydantic.ConfigDict(extra="forbid")

    user_id: UserId
    k: int | None = None
    exclude_items: list[ItemId] | None = None
    age: float | None = None
    gender: str | None = None
    occupation: str | None = None
    zip_code: str | None = None

    @pydantic.field_validator("k", "exclude_items", "age", "gender", "occupation", "zip_code", mode="before")
    @classmethod
    def _missing_is_none(cls, value: Any) -> Any:
        """A DataFrame turns a missing value into NaN (and k into a float column)."""
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if value.is_integer():
                return int(value)
        return value

    @pydantic.field_validator("zip_code", mode="before")
    @classmethod
    def _zip_as_text(cls, value: Any) -> Any:
        """A zip code given as a number (a numeric DataFrame column) is its digits."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(int(value))
        return value


class Recommendation(pydantic.BaseModel):
    """One recommended item; ``personalised`` is false where the popularity fallback answered."""

    user_id: UserId
    item_id: ItemId
    rank: int
    score: float
    personalised: bool
    segment: int | None = None


class TopKRecommender(PythonModel):
    """Top-K recommendations from the state shipped with the model."""

    def load_context(self, context) -> None:
        self.scorer = recsys_scoring.TopKScorer.load(context.artifacts["state"])

    def predict(
        self,
        context,
        model_input: list[RecommendationRequest],
        params: dict[str, Any] | None = None,
    ) -> list[Recommendation]:
        default_k = (params or {}).get("k")
        ks = [row.k if row.k is not None else default_k for row in model_input]
        attributes = [
            {name: getattr(row, name) for name in ATTRIBUTES if getattr(row, name) is not None} or None
            for row in model_input
        ]
        try:
            columns = self.scorer.recommend_columns(
                [row.user_id for row in model_input],
                k=ks,
                exclude_items=[row.exclude_items for row in model_input],
                attributes=attributes if any(attributes) else None,
            )
        except recsys_scoring.RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        segments = [s if s >= 0 else None for s in columns[5].tolist()] if len(columns) > 5 else None
        segments = segments or [None] * len(columns[0])
        return [
            Recommendation.model_construct(
                user_id=user, item_id=item, rank=rank, score=score, personalised=personal, segment=segment
            )
            for user, item, rank, score, personal, segment in zip(
                *(c.tolist() for c in columns[:5]), segments
            )
        ]


mlflow.models.set_model(TopKRecommender())
