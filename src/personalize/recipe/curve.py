"""The privacy-utility curve as experiments: every private model expanded over the curve's points
and grouped by the unit of its guarantee (config/curve.py says the rules).

A model is private when its params class has ``epsilon``; it is expanded when its ``params`` leave
``epsilon`` unset (a model with ``epsilon`` written down runs as written). Its unit is the class's
``dp_unit`` (``user`` or ``event``). Models that are not private (references such as
``popularity``) run once in each unit's experiment, on that unit's split, beside the private ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from personalize.config import ExperimentConfig, ModelSpec
from personalize.core.errors import ConfigError
from personalize.evaluation.privacy_curve import CurvePoint, point_name
from personalize.models.registry import get_model_class


@dataclass
class CurvePart:
    """One experiment of the curve: the models of one unit on the split for that unit."""

    unit: str
    config: ExperimentConfig
    points: dict[str, CurvePoint]  # expanded label -> its place on the curve


def is_private(spec: ModelSpec) -> bool:
    return "epsilon" in get_model_class(spec.type).Config.model_fields


def unit_of(spec: ModelSpec) -> str:
    """The unit of a model's guarantee (``user`` for models that are not private: they are
    compared with the user-level models on the experiment's split)."""
    return get_model_class(spec.type).dp_unit or "user"


def expand_spec(spec: ModelSpec, config: ExperimentConfig) -> list[tuple[ModelSpec, CurvePoint]]:
    """The specs of one model along the curve (or the model itself when it is not expanded)."""
    curve = config.privacy_curve
    unit = unit_of(spec)
    if curve is None or not is_private(spec) or "epsilon" in spec.params:
        fields = get_model_class(spec.type).Config.model_fields
        eps = spec.params.get("epsilon")
        clip = spec.params.get("clip", fields["clip"].default if "clip" in fields else None)
        name = point_name(eps, clip is not None) if is_private(spec) else "non-private"
        return [(spec, CurvePoint(spec.label, name, eps, unit))]
    fields = get_model_class(spec.type).Config.model_fields
    points: list[dict] = []
    if curve.non_private:
        points.append({"epsilon": None, **({"clip": None} if "clip" in fields else {})})
    if curve.clipping_only and "clip" in fields:
        points.append({"epsilon": None})
    bound = (
        {}
        if "max_units" in spec.params or unit not in curve.max_units
        else {"max_units": curve.max_units[unit]}
    )
    points += [{"epsilon": e, **bound} for e in curve.epsilons]
    out = []
    for update in points:
        eps = update["epsilon"]
        clipped = "clip" in fields and ("clip" not in update or update["clip"] is not None)
        name = point_name(eps, clipped)
        params = {**spec.params, **update}
        grid = {k: v for k, v in spec.grid.items() if k not in update}
        new = spec.model_copy(update={"name": f"{spec.label} {name}", "params": params, "grid": grid})
        out.append((new, CurvePoint(spec.label, name, eps, unit)))
    return out


def curve_parts(config: ExperimentConfig) -> list[CurvePart]:
    """The curve's experiments: user-level models (and references) on ``config.split``,
    event-level ones on ``privacy_curve.event_split``; each keeps the experiment's name (its
    runs nest under the curve's run) with the unit appended."""
    curve = config.privacy_curve
    if curve is None:
        raise ConfigError("privacy_curve: this experiment has no privacy_curve section")
    grouped: dict[str, list[tuple[ModelSpec, CurvePoint]]] = {"user": [], "event": []}
    references = [spec for spec in config.models if not is_private(spec)]
    for spec in config.models:
        if not is_private(spec):
            continue
        for new, point in expand_spec(spec, config):
            if point.unit not in grouped:
                raise ConfigError(f"model {spec.label!r}: unknown privacy unit {point.unit!r}")
            grouped[point.unit].append((new, point))
    parts = []
    for unit in [u for u, specs in grouped.items() if specs] or ["user"]:
        # models that are not private run in every part: the same attack against them shows how
        # much AUC the split alone gives (on a temporal split non-members are also later in time)
        specs = grouped[unit] + [(s, CurvePoint(s.label, "non-private", None, unit)) for s in references]
        split = config.split if unit == "user" else curve.event_split
        experiment = config.tracking.experiment or config.name
        sub = config.model_copy(
            update={
                "name": f"{config.name} {unit}-level",
                "models": [s for s, _ in specs],
                "split": split,
                "privacy_curve": None,
                "tracking": config.tracking.model_copy(update={"experiment": experiment}),
            }
        )
        parts.append(CurvePart(unit, sub, {s.label: p for s, p in specs}))
    return parts
