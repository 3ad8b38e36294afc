"""Standard column names, used by every table the package reads or writes."""

USER = "user_id"
ITEM = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
WEIGHT = "weight"
EVENT = "event"

# the protocol's one total order: time, then item ID (user ID breaks exact ties)
TOTAL_ORDER = [TIMESTAMP, ITEM, USER]

# item attributes
TITLE = "title"
YEAR = "year"
GENRES = "genres"

# user attributes (MovieLens)
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
ZIP = "zip_code"

# the user's segment (personalize.segments), a user attribute models may read as data
SEGMENT = "segment"

# recommendations
RANK = "rank"
SCORE = "score"
PERSONALISED = "personalised"

# internal integer indices
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"

# quarantine table
Q_TABLE = "table"
Q_SOURCE = "source"
Q_ROW = "row"
Q_REASON = "reason"
Q_VALUES = "values"
