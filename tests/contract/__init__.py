"""The contract suite: the same tests for every registered model family (see families.py)."""
