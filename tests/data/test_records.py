"""The shared train/validation split of records (documents, conversations, preference pairs)."""

from llm.data.records import split_train_val


def test_split_is_seeded_disjoint_and_holds_out_the_fraction():
    items = list(range(100))
    train, val = split_train_val(items, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == items and not set(train) & set(val)
    assert split_train_val(items, 0.1, seed=3) == (train, val)
    assert split_train_val(items, 0.1, seed=4)[1] != val


def test_small_sources_keep_one_for_validation_only_when_they_can():
    assert len(split_train_val(["a", "b", "c"], 0.01, seed=0)[1]) == 1
    assert split_train_val(["a"], 0.5, seed=0) == (["a"], [])
    assert split_train_val([], 0.5, seed=0) == ([], [])
