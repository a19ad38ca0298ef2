"""The paired sign test against values worked by hand from the binomial distribution with p = 1/2."""

import pytest

from llm.eval.stats import paired_comparison, sign_test_p, wilson_interval


def test_sign_test_matches_hand_computed_tails():
    # 8 fixed, 2 broken: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert sign_test_p(8, 2) == 0.109375
    # 6 to 0: 2 / 2^6; 5 to 0 is the classic "all one way, still not significant": 2 / 2^5
    assert sign_test_p(6, 0) == 0.03125
    assert sign_test_p(5, 0) == 0.0625
    # 5 fixed, 1 broken: 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    assert sign_test_p(5, 1) == 0.21875


def test_sign_test_is_symmetric_and_capped_at_one():
    assert sign_test_p(0, 0) == 1.0  # nothing changed: no evidence either way
    assert sign_test_p(5, 5) == 1.0  # 2 * P(X <= 5) for n = 10 is above 1
    assert sign_test_p(3, 4) == sign_test_p(4, 3) == 1.0
    for fixed, broken in [(8, 2), (13, 2), (1, 9), (40, 25)]:
        assert sign_test_p(fixed, broken) == sign_test_p(broken, fixed)


def test_sign_test_takes_thousands_of_items():
    # 2^n is past a float's range at n = 1024: the ratio is taken on integers
    assert sign_test_p(1000, 1000) == 1.0
    assert sign_test_p(0, 1500) == 0.0  # 2 / 2^1500 underflows to zero, it does not raise
    assert 0.0 < sign_test_p(1100, 900) < 0.001


def test_sign_test_rejects_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        sign_test_p(-1, 3)


def test_paired_comparison_counts_only_items_both_hold():
    before = {"a": True, "b": False, "c": False, "d": True, "e": False, "only_before": True}
    after = {"a": True, "b": True, "c": False, "d": False, "e": True, "only_after": False}
    result = paired_comparison(before, after)
    assert result == {"n": 5, "fixed": 2, "broken": 1, "both_right": 1, "both_wrong": 1,
                      "before_accuracy": 0.4, "after_accuracy": 0.6, "p_value": 1.0, "significant": False}


def test_paired_comparison_significance_follows_the_sign_test():
    before = {i: i < 2 for i in range(20)}  # right on 0 and 1
    after = {i: i >= 2 and i < 10 for i in range(20)}  # fixed 2..9 (8), broken 0 and 1 (2)
    result = paired_comparison(before, after)
    assert (result["fixed"], result["broken"], result["p_value"], result["significant"]) == (8, 2, 0.109375, False)
    result = paired_comparison({i: False for i in range(6)}, {i: True for i in range(6)})
    assert (result["fixed"], result["p_value"], result["significant"]) == (6, 0.03125, True)


def test_paired_comparison_of_nothing():
    result = paired_comparison({"a": True}, {"b": True})
    assert result["n"] == 0 and result["before_accuracy"] is None and result["p_value"] == 1.0 and not result["significant"]


def test_wilson_interval_matches_published_values():
    # 3 of 4 and 0 of 10: Wilson (1927) intervals as tabulated (e.g. Newcombe 1998, method 3)
    assert wilson_interval(3, 4) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0, 0) is None
