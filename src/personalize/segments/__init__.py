"""User segments: who the users are. Profiles (``personalize.features.profile_table``) are
clustered into segments a person can read, labelled for new and changing users by a classifier,
and handed to the models and the evaluator as data (a ``segment`` attribute of each user).

Beside ``models`` in the layers: the two never import each other.
"""
