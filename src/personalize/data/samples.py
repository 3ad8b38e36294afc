"""A multi-source sample made from MovieLens-100K: what a shop's exports look like.

:func:`write_events_sample` writes four CSV files, named and laid out as a shop's systems would
export them (so that the experiment file that reads them shows how to map your own exports):

``customers.csv``  the CRM: ``customer_id, age, gender, occupation, zip`` -- the ML-100K users,
                   plus customers who never bought or viewed anything;
``products.csv``   the catalogue: ``sku, name, released, genres`` (``|``-separated) -- the
                   ML-100K items;
``purchases.csv``  ``customer_id, sku, stars, purchased_at`` (epoch seconds) -- the ML-100K
                   ratings, read as purchases with a review;
``views.csv``      ``visitor, sku, viewed_at`` (ISO 8601, UTC ``Z``) -- web analytics: views of
                   the purchased items before each purchase, browsing views of other items,
                   anonymous visitors (no CRM row), views of retired SKUs (not in the
                   catalogue), tracking events fired twice, and visitor IDs zero-padded to six
                   digits (``000196`` is customer ``196``).

Views are seeded, come strictly before the purchase they lead to, and never share a second with
another event of the same person (a view and a purchase in the same second would be two events,
but the sample keeps them apart so that its counts are easy to check). :class:`EventsSample`
records what was planted, so that tests can check the ID-consistency report against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.core import columns as C

DAY = 86_400
FILES = ("customers.csv", "products.csv", "purchases.csv", "views.csv")
ANONYMOUS_START = 500_000  # visitor IDs of anonymous visitors (no CRM row)
PROSPECT_START = 900_000  # CRM customers without any event
RETIRED_START = 90_000  # SKUs viewed but no longer in the catalogue


@dataclass
class EventsSample:
    """The files written and what the generator planted in them."""

    folder: Path
    planted: dict[str, int] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, Path]:
        return {name.removesuffix(".csv"): self.folder / name for name in FILES}


def write_events_sample(
    folder: str | Path,
    users: int | None = None,
    seed: int = 0,
    views_per_purchase: float = 1.5,
    browsing_views_per_user: float = 20.0,
    anonymous_visitors: int = 50,
    prospects: int = 25,
    retired_skus: int = 5,
    double_fired: float = 0.005,
) -> EventsSample:
    """Write the sample (see the module doc) to ``folder``.

    ``users``: a seeded sample of that many ML-100K users (None: all 943).
    ``views_per_purchase``: mean number of views of a purchased item before its purchase (Poisson).
    ``browsing_views_per_user``: mean number of views of other items per user (Poisson).
    ``double_fired``: share of view rows written twice (a tracking bug; quarantined as exact
    duplicates).
    """
    from personalize.data.ingest import load_movielens_100k

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ml = load_movielens_100k(write_processed=False)
    ratings, people, catalogue = ml.interactions, ml.users, ml.items
    if users is not None and users < len(people):
        keep = np.sort(rng.choice(people[C.USER].to_numpy(), size=users, replace=False))
        ratings = ratings[ratings[C.USER].isin(keep)]
        people = people[people[C.USER].isin(keep)]
    epoch = (ratings[C.TIMESTAMP] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    purchases = pd.DataFrame(
        {
            "customer_id": ratings[C.USER].to_numpy(),
            "sku": ratings[C.ITEM].to_numpy(),
            "stars": ratings[C.RATING].astype(int).to_numpy(),
            "purchased_at": epoch.to_numpy(dtype=np.int64),
        }
    )
    taken = {(u, t) for u, t in zip(purchases["customer_id"], purchases["purchased_at"], strict=True)}

    # views of each purchased item, 1 minute to 14 days before its purchase
    n_views = rng.poisson(views_per_purchase, size=len(purchases))
    idx = np.repeat(np.arange(len(purchases)), n_views)
    before = rng.integers(60, 14 * DAY, size=len(idx))
    lead = pd.DataFrame(
        {
            "visitor": purchases["customer_id"].to_numpy()[idx],
            "sku": purchases["sku"].to_numpy()[idx],
            "at": purchases["purchased_at"].to_numpy()[idx] - before,
            "limit": purchases["purchased_at"].to_numpy()[idx],
        }
    )

    # browsing: views of items the user never bought, by popularity, within their active period
    popularity = np.bincount(
        np.searchsorted(catalogue[C.ITEM].to_numpy(), ratings[C.ITEM].to_numpy()), minlength=len(catalogue)
    ).astype(float)
    p = (popularity + 1.0) / (popularity + 1.0).sum()
    span = purchases.groupby("customer_id")["purchased_at"].agg(["min", "max"])
    bought = purchases.groupby("customer_id")["sku"].agg(set)
    rows = []
    for user, (first, last) in span.iterrows():
        m = int(rng.poisson(browsing_views_per_user))
        if m == 0:
            continue
        items = catalogue[C.ITEM].to_numpy()[rng.choice(len(catalogue), size=m, p=p)]
        items = [i for i in items if i not in bought[user]]
        times = rng.integers(first - 30 * DAY, last, size=len(items))
        rows += [(user, i, t, last + 1) for i, t in zip(items, times, strict=True)]
    browse = pd.DataFrame(rows, columns=["visitor", "sku", "at", "limit"])

    # anonymous visitors and views of retired SKUs
    t0, t1 = int(purchases["purchased_at"].min()), int(purchases["purchased_at"].max())
    anon = pd.DataFrame(
        {
            "visitor": np.repeat(ANONYMOUS_START + np.arange(anonymous_visitors), 3),
            "sku": catalogue[C.ITEM].to_numpy()[rng.choice(len(catalogue), size=3 * anonymous_visitors, p=p)],
            "at": rng.integers(t0, t1, size=3 * anonymous_visitors),
            "limit": t1 + 1,
        }
    )
    retired_people = rng.choice(purchases["customer_id"].unique(), size=retired_skus)
    retired = pd.DataFrame(
        {
            "visitor": retired_people,
            "sku": RETIRED_START + np.arange(retired_skus),
            "at": rng.integers(t0, t1, size=retired_skus),
            "limit": t1 + 1,
        }
    )
    views = pd.concat([lead, browse, anon, retired], ignore_index=True)
    views["at"] = _free_seconds(views, taken)
    views = views.drop(columns="limit")

    # double-fired tracking events, then a seeded order (exports are not sorted)
    doubled = views.sample(frac=double_fired, random_state=seed)
    views = pd.concat([views, doubled], ignore_index=True).sample(frac=1.0, random_state=seed)
    views = views.reset_index(drop=True)
    known = set(people[C.USER].to_numpy())
    padded = views["visitor"].isin(known)
    out_views = pd.DataFrame(
        {
            "visitor": np.where(
                padded, views["visitor"].map(lambda v: f"{v:06d}"), views["visitor"].astype(str)
            ),
            "sku": views["sku"].to_numpy(),
            "viewed_at": pd.to_datetime(views["at"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )

    customers = pd.DataFrame(
        {
            "customer_id": people[C.USER].to_numpy(),
            "age": people[C.AGE].astype("Int64").to_numpy(dtype=object),
            "gender": people[C.GENDER].to_numpy(),
            "occupation": people[C.OCCUPATION].to_numpy(),
            "zip": people[C.ZIP].to_numpy(),
        }
    )
    prospect = pd.DataFrame(
        {
            "customer_id": PROSPECT_START + np.arange(prospects),
            "age": rng.integers(18, 70, size=prospects),
            "gender": rng.choice(["F", "M"], size=prospects),
            "occupation": rng.choice(customers["occupation"].dropna().unique(), size=prospects),
            "zip": [f"{z:05d}" for z in rng.integers(10000, 99999, size=prospects)],
        }
    )
    customers = pd.concat([customers, prospect], ignore_index=True)
    products = pd.DataFrame(
        {
            "sku": catalogue[C.ITEM].to_numpy(),
            "name": catalogue[C.TITLE].to_numpy(),
            "released": catalogue[C.YEAR].astype("Int64").to_numpy(dtype=object),
            "genres": ["|".join(g) for g in catalogue[C.GENRES]],
        }
    )
    customers.to_csv(folder / "customers.csv", index=False)
    products.to_csv(folder / "products.csv", index=False)
    purchases.sample(frac=1.0, random_state=seed + 1).to_csv(folder / "purchases.csv", index=False)
    out_views.to_csv(folder / "views.csv", index=False)

    planted = {
        "customers": len(customers),
        "prospects": prospects,
        "purchases": len(purchases),
        "views": len(out_views),
        "double_fired_views": len(doubled),
        "anonymous_visitors": anonymous_visitors,
        "retired_skus": retired_skus,
        "views_of_retired_skus": len(retired),
        "padded_visitors": int(views.loc[padded, "visitor"].nunique()),
        "buyers": int(purchases["customer_id"].nunique()),
    }
    return EventsSample(folder, planted)


def _free_seconds(views: pd.DataFrame, taken: set[tuple[int, int]]) -> np.ndarray:
    """Each view's second moved earlier until no other event of the same person has it (and
    it stays before the purchase it leads to, ``limit``)."""
    out = views["at"].to_numpy().copy()
    for r, (user, at) in enumerate(zip(views["visitor"].to_numpy(), out, strict=True)):
        while (user, at) in taken:
            at -= 1
        taken.add((user, at))
        out[r] = at
    if (out >= views["limit"].to_numpy()).any():  # pragma: no cover - moved earlier only
        raise AssertionError("a view was placed at or after its purchase")
    return out
