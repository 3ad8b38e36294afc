"""Entity resolution: find catalogue items (or users) recorded under several IDs, decide per
candidate pair whether they are the same entity, and map duplicates to one canonical ID.

Library: ``rapidfuzz`` (a small, well-kept C++ string-similarity library). Blocking on a
normalised key plus fuzzy scoring on a few fields is all this needs; ``dedupe``'s active learning
and ``splink``'s SQL engine (probabilistic record linkage) would be far more machinery for a few
thousand rows and a rule a person can read.

Pipeline (the same for items and users):

1. **Normalise** a text field: accents removed (Unicode NFKD), lower-case, punctuation replaced by
   spaces, spaces collapsed. Item titles also drop a trailing year in parentheses (``"Toy Story
   (1995)"``) and move a trailing article to the front (``"Ice Storm, The"`` -> ``"the ice
   storm"``; articles: the, a, an).
2. **Block**: candidate pairs are the pairs with the same normalised key, plus the pairs whose keys
   score at least ``candidate_cutoff`` (0-100) under ``rapidfuzz.fuzz.token_sort_ratio``
   (``rapidfuzz.process.cdist``, ``workers=1``, in chunks of rows so that memory stays bounded).
   Records with an empty key (no title) are never candidates.
3. **Decide** each pair by a documented rule (:func:`resolve_items`, :func:`resolve_users`): one
   row per pair with both IDs (``id`` < ``other_id``), the compared values, the scores, the rule
   that applied (text) and the decision ``merge`` or ``keep_apart``.
4. **Group** the merged pairs transitively (union-find). A group that would also join two IDs of a
   ``keep_apart`` pair contradicts itself: the computed table then keeps the whole group apart
   (its merge rows become ``keep_apart``, saying why); a reviewed table with such a contradiction
   is an error. The **canonical ID** of a group is its smallest ID (numeric order for integer IDs,
   code-point order for string IDs), so it never depends on the order of the rows.

The merge table is written as CSV (:func:`write_merge_table`) for a person to review: changing a
row's ``decision`` and feeding the file back (``data.merge_duplicate_items: <path>``, read by
:func:`read_merge_table`) changes the merge. :func:`apply_item_merges` maps interactions to the
canonical IDs during ingestion.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.core.paths import project_root

MERGE = "merge"
KEEP_APART = "keep_apart"
DECISIONS = (MERGE, KEEP_APART)

ITEM_KIND = "item"
USER_KIND = "user"

# columns a merge table must have to be read back (every other column is informative only)
REQUIRED_COLUMNS = ("kind", "id", "other_id", "canonical_id", "decision")

ARTICLES = ("the", "a", "an")
CANDIDATE_CUTOFF = 85.0  # token_sort_ratio (0-100) from which two keys are a candidate pair
MERGE_SCORE = 90.0  # near-identical titles: token_sort_ratio from which a same-year pair may merge
MIN_GENRE_OVERLAP = 0.5  # near-identical titles: genre Jaccard from which a same-year pair may merge
TEXT_AGREES = 90.0  # users: a text field agrees when its token_sort_ratio is at least this
CHUNK = 2048  # rows of the cdist score matrix computed at a time

_ROMAN = {"ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii"}
_YEAR_SUFFIX = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")


# ------------------------------------------------------------------------- normalisation


def normalise_text(value: object) -> str:
    """Accents removed (NFKD), lower-case, punctuation as spaces, spaces collapsed; '' if missing."""
    if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
        return ""
    text = unicodedata.normalize("NFKD", str(value))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


def title_key(title: object, articles: Sequence[str] = ARTICLES) -> str:
    """The blocking key of a title: a trailing ``(YYYY)`` dropped, a trailing ``", The"`` (or
    another of ``articles``) moved to the front, then :func:`normalise_text`.

    ``"Ice Storm, The (1997)"`` -> ``"the ice storm"``; ``"Shall We Dance?"`` -> ``"shall we dance"``.
    """
    if title is None or pd.isna(title):
        return ""
    text = _YEAR_SUFFIX.sub("", str(title)).strip()
    if articles:
        pattern = r"^(.*\S)\s*,\s*(" + "|".join(map(re.escape, articles)) + r")$"
        found = re.match(pattern, text, flags=re.IGNORECASE)
        if found:
            text = f"{found.group(2)} {found.group(1)}"
    return normalise_text(text)


def _numbers(key: str) -> frozenset[str]:
    """Number tokens of a key (digits, roman numerals II-XIII): sequels differ in them."""
    return frozenset(t for t in key.split() if t.isdigit() or t in _ROMAN)


# ------------------------------------------------------------------------------ blocking


def candidate_pairs(keys: Sequence[str], cutoff: float = CANDIDATE_CUTOFF) -> dict[tuple[int, int], float]:
    """Positions ``(i, j)``, ``i < j``, of records whose keys are equal (score 100) or score at
    least ``cutoff`` under ``fuzz.token_sort_ratio``; empty keys are skipped. Scores are computed
    once per pair of distinct keys with ``process.cdist`` (``workers=1``), ``CHUNK`` rows at a time."""
    if not 0 < cutoff <= 100:
        raise ValueError(f"candidate cutoff must be in (0, 100], got {cutoff}")
    members: dict[str, list[int]] = defaultdict(list)
    for pos, key in enumerate(keys):
        if key:
            members[key].append(pos)
    unique = sorted(members)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(unique), CHUNK):
        block = unique[start : start + CHUNK]
        scores = process.cdist(
            block, unique, scorer=fuzz.token_sort_ratio, score_cutoff=cutoff, workers=1, dtype=np.float32
        )
        rows, cols = np.nonzero(scores >= cutoff)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a, b = start + r, c
            if a > b:
                continue
            score = 100.0 if a == b else float(scores[r, c])
            for i in members[unique[a]]:
                for j in members[unique[b]]:
                    if i != j:
                        pairs[(min(i, j), max(i, j))] = score
    return pairs


def exact_pairs(keys: Sequence[str]) -> set[tuple[int, int]]:
    """Positions ``(i, j)``, ``i < j``, of records with the same non-empty key."""
    members: dict[str, list[int]] = defaultdict(list)
    for pos, key in enumerate(keys):
        if key:
            members[key].append(pos)
    return {(a, b) for group in members.values() for n, a in enumerate(group) for b in group[n + 1 :]}


# ------------------------------------------------------------------------------ grouping


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the root is always the smallest ID


def merge_groups(pairs: Iterable[tuple[Hashable, Hashable]]) -> list[list]:
    """Connected components of the merged pairs (union-find), each sorted, smallest ID first;
    the groups sorted by their smallest ID. Only components of two or more IDs are returned."""
    uf = _UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    groups: dict[Hashable, list] = defaultdict(list)
    for x in list(uf.parent):
        groups[uf.find(x)].append(x)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def canonical_map(table: pd.DataFrame) -> dict:
    """``{duplicate ID: canonical ID}`` of a merge table's ``merge`` rows (canonical IDs omitted).

    A merge row's ``canonical_id`` names its group's canonical ID; rows without one use the rule
    (the group's smallest ID)."""
    merged = table[table["decision"] == MERGE]
    groups = merge_groups(zip(merged["id"].tolist(), merged["other_id"].tolist()))
    given = {}
    for a, canon in zip(merged["id"].tolist(), merged["canonical_id"].tolist()):
        if canon is not None and not pd.isna(canon):
            given[a] = canon
    mapping = {}
    for group in groups:
        canon = next((given[x] for x in group if x in given), group[0])
        mapping.update({x: canon for x in group if x != canon})
    return mapping


def _settle(table: pd.DataFrame) -> pd.DataFrame:
    """Groups the merge rows transitively; a group that also contains both IDs of a keep_apart
    row is kept apart (every merge row of it becomes keep_apart, saying why); fills canonical_id
    (the group's smallest ID) on the merge rows."""
    table = table.copy()
    merged = table["decision"] == MERGE
    uf = _UnionFind()
    for a, b in zip(table.loc[merged, "id"].tolist(), table.loc[merged, "other_id"].tolist()):
        uf.union(a, b)
    conflicts: dict[Hashable, list[str]] = defaultdict(list)
    for a, b in zip(table.loc[~merged, "id"].tolist(), table.loc[~merged, "other_id"].tolist()):
        if a in uf.parent and b in uf.parent and uf.find(a) == uf.find(b):
            conflicts[uf.find(a)].append(f"{a} and {b}")
    if conflicts:
        for pos in np.flatnonzero(merged.to_numpy()):
            root = uf.find(table["id"].iat[pos])
            if root in conflicts:
                table.iloc[pos, table.columns.get_loc("decision")] = KEEP_APART
                table.iloc[pos, table.columns.get_loc("rule")] = (
                    f"{table['rule'].iat[pos]}; not merged: the group would also join "
                    f"{', '.join(sorted(conflicts[root]))}, which are kept apart (decide by hand)"
                )
        merged = table["decision"] == MERGE
    canon = [uf.find(a) if m else None for a, m in zip(table["id"].tolist(), merged.tolist())]
    table["canonical_id"] = pd.array(canon, dtype=_nullable(table["id"].dtype))
    return table


def _nullable(dtype) -> str:
    """The nullable dtype for a column of IDs with gaps (``canonical_id`` of keep_apart rows)."""
    return "Int64" if pd.api.types.is_integer_dtype(dtype) else "string"


# --------------------------------------------------------------------------------- items


def _jaccard(a: object, b: object) -> float:
    """|A ∩ B| / |A ∪ B| of two genre lists; NaN when either is missing or empty."""
    sa, sb = _as_set(a), _as_set(b)
    if not sa or not sb:
        return float("nan")
    return len(sa & sb) / len(sa | sb)


def _as_set(value: object) -> set[str]:
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return {str(v) for v in value if v is not None and not pd.isna(v)}
    if value is None or pd.isna(value):
        return set()
    return {part for part in str(value).split("|") if part}


def _joined(value: object) -> str:
    return "|".join(sorted(_as_set(value)))


def _year(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def item_rule(
    same_key: bool,
    score: float,
    year: int | None,
    other_year: int | None,
    overlap: float,
    numbers_differ: bool,
    merge_score: float = MERGE_SCORE,
    min_genre_overlap: float = MIN_GENRE_OVERLAP,
) -> tuple[str, str]:
    """The decision on one candidate pair of items, and the rule that applied (text).

    Same normalised title:
      - both years known and different -> keep_apart (a remake, or another film of that name);
      - a year missing -> keep_apart (a duplicate cannot be told from a remake);
      - same year, genres known on both sides and disjoint -> keep_apart (check by hand);
      - same year -> merge.
    Similar title (``score`` >= the candidate cutoff, keys differ):
      - years differ or a year is missing -> keep_apart;
      - different number tokens (``Home Alone`` / ``Home Alone 3``) -> keep_apart (a sequel);
      - ``score`` < ``merge_score`` -> keep_apart;
      - genre Jaccard unknown or < ``min_genre_overlap`` -> keep_apart;
      - otherwise (same year, near-identical title, overlapping genres) -> merge.
    """
    years = f"{year if year is not None else '?'} vs {other_year if other_year is not None else '?'}"
    genres = "genres unknown" if np.isnan(overlap) else f"genre overlap {overlap:.2f}"
    if same_key:
        if year is not None and other_year is not None and year != other_year:
            return KEEP_APART, f"same title, years differ ({years}): a remake or another film"
        if year is None or other_year is None:
            return (
                KEEP_APART,
                f"same title, a year is missing ({years}): cannot tell a duplicate from a remake",
            )
        if not np.isnan(overlap) and overlap == 0:
            return KEEP_APART, f"same title and year ({year}) but no genre in common: check by hand"
        return MERGE, f"same title, same year ({year}), {genres}"
    similar = f"similar title (score {score:.0f})"
    if year is None or other_year is None:
        return KEEP_APART, f"{similar}, a year is missing ({years})"
    if year != other_year:
        return KEEP_APART, f"{similar}, years differ ({years})"
    if numbers_differ:
        return (
            KEEP_APART,
            f"{similar}, same year, but different numbers in the title: a sequel or another part",
        )
    if score < merge_score:
        return KEEP_APART, f"{similar} below {merge_score:.0f}, same year ({year})"
    if np.isnan(overlap) or overlap < min_genre_overlap:
        return KEEP_APART, f"{similar}, same year ({year}), {genres} below {min_genre_overlap:.2f}"
    return MERGE, f"near-identical title (score {score:.0f}), same year ({year}), {genres}"


def resolve_items(
    items: pd.DataFrame,
    *,
    candidate_cutoff: float = CANDIDATE_CUTOFF,
    merge_score: float = MERGE_SCORE,
    min_genre_overlap: float = MIN_GENRE_OVERLAP,
    articles: Sequence[str] = ARTICLES,
) -> pd.DataFrame:
    """The merge table of a catalogue: one row per candidate pair of items (see the module
    docstring for the blocking and :func:`item_rule` for the decision), sorted by (id, other_id).

    Columns: kind ('item'), id, other_id, canonical_id (merge rows: the group's canonical ID),
    title, other_title, year, other_year, genres, other_genres ('|'-joined), title_score
    (token_sort_ratio of the normalised titles, 0-100), genre_overlap (Jaccard, 0-1, empty when
    unknown), rule, decision. ``year`` and ``genres`` columns are optional in ``items`` (unknown
    when absent). The table does not depend on the order of ``items``' rows.
    """
    if C.ITEM not in items.columns or C.TITLE not in items.columns:
        raise DataError(
            f"items table: entity resolution needs the columns {C.ITEM} and {C.TITLE}, "
            f"got {list(items.columns)}"
        )
    _check_unique(items[C.ITEM], "items table", C.ITEM)
    items = items.sort_values(C.ITEM, kind="stable").reset_index(drop=True)
    ids = items[C.ITEM]
    titles = items[C.TITLE].tolist()
    years = [_year(y) for y in items[C.YEAR]] if C.YEAR in items else [None] * len(items)
    genres = items[C.GENRES].tolist() if C.GENRES in items else [None] * len(items)
    keys = [title_key(t, articles) for t in titles]
    rows = []
    for (i, j), score in sorted(candidate_pairs(keys, candidate_cutoff).items()):
        overlap = _jaccard(genres[i], genres[j])
        decision, rule = item_rule(
            keys[i] == keys[j],
            score,
            years[i],
            years[j],
            overlap,
            _numbers(keys[i]) != _numbers(keys[j]),
            merge_score,
            min_genre_overlap,
        )
        rows.append(
            {
                "kind": ITEM_KIND,
                "id": ids.iat[i],
                "other_id": ids.iat[j],
                "title": titles[i],
                "other_title": titles[j],
                "year": years[i],
                "other_year": years[j],
                "genres": _joined(genres[i]),
                "other_genres": _joined(genres[j]),
                "title_score": round(score, 1),
                "genre_overlap": round(overlap, 3),
                "rule": rule,
                "decision": decision,
            }
        )
    columns = ["kind", "id", "other_id", "canonical_id", "title", "other_title", "year", "other_year"]
    columns += ["genres", "other_genres", "title_score", "genre_overlap", "rule", "decision"]
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "canonical_id"])
    table["id"] = table["id"].astype(ids.dtype)
    table["other_id"] = table["other_id"].astype(ids.dtype)
    for col in ("year", "other_year"):
        table[col] = table[col].astype("Int64")
    for col in ("title_score", "genre_overlap"):
        table[col] = table[col].astype("float64")
    return _settle(table)[columns]


# --------------------------------------------------------------------------------- users


@dataclass(frozen=True)
class FieldSpec:
    """How one field is compared for :func:`resolve_users`.

    ``kind``: ``text`` (token_sort_ratio of the normalised values, agrees when >= ``TEXT_AGREES``),
    ``exact`` (normalised values equal), ``number`` (|a - b| <= ``tolerance``, in the field's
    unit). ``identifying``: the field identifies a person (a name, an e-mail address); a pair
    merges only when at least one identifying field agrees."""

    name: str
    kind: Literal["text", "exact", "number"] = "text"
    tolerance: float = 0.0
    identifying: bool = False


DEFAULT_USER_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec("name", "text", identifying=True),
    "email": FieldSpec("email", "exact", identifying=True),
    "phone": FieldSpec("phone", "exact", identifying=True),
    C.ZIP: FieldSpec(C.ZIP, "exact"),
    C.AGE: FieldSpec(C.AGE, "number", tolerance=1.0),
    C.GENDER: FieldSpec(C.GENDER, "exact"),
    C.OCCUPATION: FieldSpec(C.OCCUPATION, "text"),
}


def _field_spec(field: str | FieldSpec, frame: pd.DataFrame) -> FieldSpec:
    if isinstance(field, FieldSpec):
        spec = field
    elif field in DEFAULT_USER_FIELDS:
        spec = DEFAULT_USER_FIELDS[field]
    elif field in frame.columns and pd.api.types.is_numeric_dtype(frame[field]):
        spec = FieldSpec(field, "number")
    else:
        spec = FieldSpec(field, "text")
    if spec.name not in frame.columns:
        raise DataError(f"users table: no column {spec.name!r} to compare (columns: {list(frame.columns)})")
    return spec


def _compare(spec: FieldSpec, a: object, b: object) -> tuple[float, bool | None]:
    """(score, agrees) of one field: score is the text ratio (0-100), 100/0 for exact, |a - b|
    for numbers; agrees is None when a value is missing."""
    if spec.kind == "number":
        if pd.isna(a) or pd.isna(b):
            return float("nan"), None
        try:
            diff = abs(float(a) - float(b))
        except (TypeError, ValueError):
            raise DataError(
                f"users table: field {spec.name!r} is compared as a number but holds {a!r} / {b!r} "
                "(pass FieldSpec(name, 'text') to compare it as text)"
            ) from None
        return diff, diff <= spec.tolerance
    na, nb = normalise_text(a), normalise_text(b)
    if not na or not nb:
        return float("nan"), None
    if spec.kind == "exact":
        return (100.0, True) if na == nb else (0.0, False)
    score = float(fuzz.token_sort_ratio(na, nb))
    return score, score >= TEXT_AGREES


def user_rule(specs: Sequence[FieldSpec], results: Sequence[tuple[float, bool | None]]) -> tuple[str, str]:
    """The decision on one candidate pair of users, and the rule that applied (text).

    A field known on both sides agrees or disagrees (see :class:`FieldSpec`); a missing value
    counts for neither. Any disagreeing field -> keep_apart; no identifying field that agrees ->
    keep_apart (attributes such as age, gender and ZIP code do not identify a person); otherwise
    merge."""
    disagree = [s.name for s, (_, ok) in zip(specs, results) if ok is False]
    agree = [s.name for s, (_, ok) in zip(specs, results) if ok is True]
    if disagree:
        return KEEP_APART, f"disagree on {', '.join(disagree)}"
    identifying = [s.name for s in specs if s.identifying]
    if not any(name in agree for name in identifying):
        which = ", ".join(identifying) if identifying else "none compared"
        return KEEP_APART, (
            f"agree on {', '.join(agree) or 'nothing'}, but no identifying field agrees "
            f"(identifying: {which}): attributes alone do not identify a person"
        )
    return MERGE, f"agree on {', '.join(agree)}; no field disagrees"


def resolve_users(
    users: pd.DataFrame,
    fields: Sequence[str | FieldSpec],
    *,
    id_column: str = C.USER,
    block_on: Sequence[str] | None = None,
    fuzzy_on: str | None = None,
    candidate_cutoff: float = CANDIDATE_CUTOFF,
) -> pd.DataFrame:
    """The merge table of a people table (a CRM export): one row per candidate pair of users.

    ``fields``: the compared fields, by name (known names get :data:`DEFAULT_USER_FIELDS`' spec,
    other numeric columns ``number``, others ``text``) or as :class:`FieldSpec`. Candidates: pairs
    with the same normalised value of a ``block_on`` field (default: the identifying fields, or
    the first field when none is identifying), plus pairs whose ``fuzzy_on`` values (default: the
    first identifying text field) score at least ``candidate_cutoff``. Decision:
    :func:`user_rule`. Columns: kind ('user'), id, other_id, canonical_id, then per field
    ``<f>``, ``other_<f>``, ``<f>_score`` (text/exact, 0-100) or ``<f>_diff`` (number), then
    rule, decision; sorted by (id, other_id), independent of the row order.
    """
    if id_column not in users.columns:
        raise DataError(f"users table: no ID column {id_column!r} (columns: {list(users.columns)})")
    if not fields:
        raise DataError("users table: no field to compare (pass e.g. name, email, zip_code)")
    specs = [_field_spec(f, users) for f in fields]
    _check_unique(users[id_column], "users table", id_column)
    users = users.sort_values(id_column, kind="stable").reset_index(drop=True)
    ids = users[id_column]
    if block_on is None:
        block_on = [s.name for s in specs if s.identifying] or [specs[0].name]
    if fuzzy_on is None:
        fuzzy_on = next((s.name for s in specs if s.identifying and s.kind == "text"), None)
    for name in [*block_on, *([fuzzy_on] if fuzzy_on else [])]:
        if name not in users.columns:
            raise DataError(f"users table: no column {name!r} to block on (columns: {list(users.columns)})")
    pairs: set[tuple[int, int]] = set()
    for name in block_on:
        pairs |= exact_pairs([normalise_text(v) for v in users[name]])
    if fuzzy_on:
        pairs |= set(candidate_pairs([normalise_text(v) for v in users[fuzzy_on]], candidate_cutoff))
    rows = []
    for i, j in sorted(pairs):
        row: dict = {"kind": USER_KIND, "id": ids.iat[i], "other_id": ids.iat[j]}
        results = []
        for spec in specs:
            a, b = users[spec.name].iat[i], users[spec.name].iat[j]
            score, ok = _compare(spec, a, b)
            results.append((score, ok))
            row[spec.name] = a
            row[f"other_{spec.name}"] = b
            row[f"{spec.name}_{'diff' if spec.kind == 'number' else 'score'}"] = round(score, 1)
        row["decision"], row["rule"] = user_rule(specs, results)
        rows.append(row)
    columns = ["kind", "id", "other_id"]
    for spec in specs:
        suffix = "diff" if spec.kind == "number" else "score"
        columns += [spec.name, f"other_{spec.name}", f"{spec.name}_{suffix}"]
    table = pd.DataFrame(rows, columns=[*columns, "rule", "decision"])
    table["id"] = table["id"].astype(ids.dtype)
    table["other_id"] = table["other_id"].astype(ids.dtype)
    table = _settle(table)
    return table[["kind", "id", "other_id", "canonical_id", *columns[3:], "rule", "decision"]]


def _check_unique(ids: pd.Series, label: str, column: str) -> None:
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise DataError(f"{label}: {column} {repeated.iloc[0]!r} appears more than once")


# ------------------------------------------------------------------------ the CSV round trip


def write_merge_table(table: pd.DataFrame, path: Path | str) -> Path:
    """Write a merge table as CSV (parent folders created); empty cells for missing values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def read_merge_table(path: Path | str, items: pd.DataFrame) -> pd.DataFrame:
    """Read a (reviewed) item merge table and check it strictly against the catalogue ``items``.

    Only ``kind``, ``id``, ``other_id``, ``canonical_id`` and ``decision`` are read; the other
    columns are kept as text for the reader. Errors (:class:`DataError`, naming the file, the
    1-based data row and the field): a missing column, a kind other than 'item', a decision other
    than merge / keep_apart, an ID not in the catalogue, a pair of one ID or a pair listed twice,
    a merge row's canonical_id outside its group, an ID mapped to two canonical IDs, and a
    keep_apart pair whose IDs the merge rows join. An empty ``canonical_id`` on a merge row takes
    the rule's (the group's smallest ID); ``canonical_id`` on a keep_apart row is ignored.
    Returns the table sorted by (id, other_id) with the IDs in the catalogue's dtype and
    ``canonical_id`` filled on the merge rows."""
    path = Path(path)
    label = f"merge table {path}"
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{label}: file not found (write one with `personalize resolve`)") from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{label}: the file is empty (expected the header {', '.join(REQUIRED_COLUMNS)})"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{label}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{label}: missing column(s) {', '.join(missing)} (found {', '.join(raw.columns)})")
    if C.ITEM not in items.columns:
        raise DataError(f"{label}: the catalogue has no {C.ITEM} column to check the IDs against")
    catalogue = items[C.ITEM]
    known = {str(v): v for v in catalogue.tolist()}
    integer_ids = pd.api.types.is_integer_dtype(catalogue)
    problems: list[str] = []

    def where(row: int, field: str, message: str) -> None:
        problems.append(f"row {row}, field {field}: {message}")

    def as_id(value: str, row: int, field: str, required: bool = True):
        text = value.strip()
        if not text:
            if required:
                where(row, field, "missing (expected an item ID of the catalogue)")
            return None
        if integer_ids and re.fullmatch(r"[+-]?\d+(\.0*)?", text):
            text = str(int(float(text))) if "." in text else str(int(text))
        if text not in known:
            where(row, field, f"{value!r} is not an item ID of the catalogue")
            return None
        return known[text]

    records = []
    seen: dict[tuple, int] = {}
    for n, rec in enumerate(raw.to_dict(orient="records"), start=1):
        kind = rec["kind"].strip()
        if kind != ITEM_KIND:
            where(n, "kind", f"{rec['kind']!r} is not {ITEM_KIND!r}")
        decision = rec["decision"].strip()
        if decision not in DECISIONS:
            where(n, "decision", f"{rec['decision']!r} is not one of {', '.join(DECISIONS)}")
        a, b = as_id(rec["id"], n, "id"), as_id(rec["other_id"], n, "other_id")
        canon = as_id(rec["canonical_id"], n, "canonical_id", required=False)
        if a is not None and b is not None:
            if a == b:
                where(n, "other_id", f"the pair joins {a!r} with itself")
            pair = (min(a, b), max(a, b))
            if pair in seen:
                where(n, "id", f"the pair {pair[0]!r}, {pair[1]!r} is already listed at row {seen[pair]}")
            seen.setdefault(pair, n)
        records.append((n, a, b, canon, decision))
    if not problems:
        _check_groups(records, where)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... ({len(problems)} problems)" if len(problems) > 10 else "")
        raise DataError(f"{label}: {shown}")
    table = raw.copy()
    table["id"] = pd.array([min(r[1], r[2]) for r in records], dtype=catalogue.dtype)
    table["other_id"] = pd.array([max(r[1], r[2]) for r in records], dtype=catalogue.dtype)
    table["decision"] = [r[4] for r in records]
    nullable = _nullable(catalogue.dtype)
    table["canonical_id"] = pd.array([r[3] if r[4] == MERGE else None for r in records], dtype=nullable)
    mapping = canonical_map(table)
    table["canonical_id"] = pd.array(
        [mapping.get(a, a) if d == MERGE else None for a, d in zip(table["id"], table["decision"])],
        dtype=nullable,
    )
    return table.sort_values(["id", "other_id"], kind="stable").reset_index(drop=True)


def _check_groups(records: list[tuple], where) -> None:
    """Canonical IDs consistent within each group of merge rows, and no keep_apart pair inside
    a group."""
    merges = [r for r in records if r[4] == MERGE]
    uf = _UnionFind()
    for _, a, b, _, _ in merges:
        uf.union(a, b)
    chosen: dict[Hashable, tuple] = {}  # group root -> (canonical ID, row)
    for n, a, _b, canon, _ in merges:
        if canon is None:
            continue
        root = uf.find(a)
        members = sorted(x for x in uf.parent if uf.find(x) == root)
        if canon not in members:
            where(n, "canonical_id", f"{canon!r} is not in the merged group {members}")
        elif root in chosen and chosen[root][0] != canon:
            first, row = chosen[root]
            where(
                n,
                "canonical_id",
                f"{a!r} is mapped to two canonical IDs: {first!r} (row {row}) and {canon!r} (this row)",
            )
        else:
            chosen.setdefault(root, (canon, n))
    for n, a, b, _, decision in records:
        if decision == KEEP_APART and a in uf.parent and b in uf.parent and uf.find(a) == uf.find(b):
            where(
                n,
                "decision",
                f"{a!r} and {b!r} are kept apart, but merge rows join them into one group "
                "(merge this pair or keep apart one of the others)",
            )


# ------------------------------------------------------------------------------- applying


def apply_item_merges(
    interactions: pd.DataFrame, items: pd.DataFrame, spec: bool | Path, report
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map every merged duplicate item ID to its canonical ID (``data.merge_duplicate_items``).

    ``spec``: ``True`` computes the merge table (:func:`resolve_items`); a path reads a reviewed
    one (:func:`read_merge_table`; relative paths against the project root). Interactions keep
    every row (a user who had two IDs of one group keeps both rows), their ID dtype and the
    ingestion order (the total order timestamp, item_id, user_id, then event and the other
    non-object columns); duplicate items leave ``items``, the canonical row keeps its attributes
    and gets the union of the group's genres. ``report.merges`` records what changed."""
    if spec is True:
        table = resolve_items(items)
        source = "computed"
    else:
        path = Path(spec)
        path = path if path.is_absolute() else project_root() / path
        table = read_merge_table(path, items)
        source = str(path)
    mapping = canonical_map(table)
    groups = merge_groups(
        zip(
            table.loc[table["decision"] == MERGE, "id"].tolist(),
            table.loc[table["decision"] == MERGE, "other_id"].tolist(),
        )
    )
    original = interactions[C.ITEM]
    remapped = original.isin(list(mapping)).to_numpy()
    values = original.to_numpy(dtype=object).copy()
    values[remapped] = [mapping[v] for v in values[remapped]]
    out = interactions.copy()
    out[C.ITEM] = pd.array(values, dtype=original.dtype)
    pairs = pd.DataFrame({"user": out[C.USER].to_numpy()[remapped], "to": values[remapped]})
    pairs["from"] = original.to_numpy()[remapped]
    both = pd.concat([pairs, _canonical_rows(out, original, mapping)], ignore_index=True)
    per_user = both.groupby(["user", "to"])["from"].nunique()
    users_two_ids = int(per_user[per_user > 1].index.get_level_values("user").nunique())
    order = [*C.TOTAL_ORDER, *([C.EVENT] if C.EVENT in out else [])]
    order += [c for c in out.columns if c not in order and out[c].dtype != object]
    out = out.sort_values(order, kind="stable").reset_index(drop=True)

    kept = items.loc[~items[C.ITEM].isin(list(mapping))].copy()
    if C.GENRES in kept.columns:
        for group in groups:
            canon = mapping.get(group[0], group[0])
            rows = items.set_index(C.ITEM).loc[[canon, *[g for g in group if g != canon]], C.GENRES]
            union: list = []
            for value in rows.tolist():
                if isinstance(value, (list, tuple, np.ndarray)):
                    union += [g for g in value if g not in union]
            at = kept.index[kept[C.ITEM] == canon]
            if union:
                kept.loc[at, C.GENRES] = pd.Series([union] * len(at), index=at, dtype=object)
    kept = kept.reset_index(drop=True)
    report.merges = {
        "source": source,
        "candidate_pairs": len(table),
        "pairs_merged": int((table["decision"] == MERGE).sum()),
        "pairs_kept_apart": int((table["decision"] == KEEP_APART).sum()),
        "groups_merged": len(groups),
        "groups": [
            [_plain(mapping.get(g[0], g[0])), *[_plain(x) for x in g if x != mapping.get(g[0], g[0])]]
            for g in groups
        ],
        "items_removed": sorted(_plain(x) for x in mapping),
        "interaction_rows_remapped": int(remapped.sum()),
        "users_with_two_ids_of_one_group": users_two_ids,
    }
    return out, kept


def _canonical_rows(out: pd.DataFrame, original: pd.Series, mapping: dict) -> pd.DataFrame:
    """(user, canonical ID, canonical ID) of the rows that already named a canonical ID."""
    canon = set(mapping.values())
    mask = original.isin(list(canon)).to_numpy()
    ids = original.to_numpy(dtype=object)[mask]
    return pd.DataFrame({"user": out[C.USER].to_numpy()[mask], "to": ids, "from": ids})


def _plain(value: object) -> object:
    """A JSON-able ID (numpy integers as int)."""
    return value.item() if isinstance(value, np.generic) else value


def describe_merge_table(table: pd.DataFrame, limit: int = 30) -> str:
    """A short text summary: pairs, merge / keep_apart counts, the merged groups (with a title
    or the first compared value when the table has one)."""
    merged = table[table["decision"] == MERGE]
    groups = merge_groups(zip(merged["id"].tolist(), merged["other_id"].tolist()))
    mapping = canonical_map(table)
    label_col = next((c for c in table.columns[4:] if f"other_{c}" in table.columns), None)
    labels = {}
    if label_col is not None:
        labels = dict(zip(table["id"].tolist(), table[label_col].tolist()))
        labels.update(zip(table["other_id"].tolist(), table[f"other_{label_col}"].tolist()))
    lines = [
        f"{len(table)} candidate pairs: {len(merged)} merge, {len(table) - len(merged)} keep_apart; "
        f"{len(groups)} groups merged ({sum(len(g) - 1 for g in groups)} IDs removed)"
    ]
    for group in groups[:limit]:
        canon = mapping.get(group[0], group[0])
        rest = [x for x in group if x != canon]
        name = labels.get(canon)
        suffix = f"  ({name})" if name is not None and not pd.isna(name) else ""
        lines.append(f"  {canon} <- {', '.join(map(str, rest))}{suffix}")
    if len(groups) > limit:
        lines.append(f"  ... and {len(groups) - limit} more")
    return "\n".join(lines)
