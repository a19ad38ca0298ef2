"""Paired comparison of two models on the same items: what the second fixed and broke, and whether that is chance.

Two accuracies measured on the same prompts are not two independent samples: the prompts both models
get right (or both get wrong) say nothing about which is better; only the discordant ones do. Under
"no difference" each of the n = fixed + broken discordant prompts is as likely to be fixed as broken,
so `fixed` is Binomial(n, 1/2). The exact two-sided sign test (McNemar's exact test) doubles the
smaller tail: p = min(1, 2 * P(X <= min(fixed, broken))).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from math import comb, sqrt

SIGNIFICANCE = 0.05
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval


def sign_test_p(fixed: int, broken: int) -> float:
    """Exact two-sided sign-test p-value of `fixed` against `broken` discordant items; 1.0 when there are none."""
    if fixed < 0 or broken < 0:
        raise ValueError(f"sign_test_p: counts must be non-negative (fixed={fixed}, broken={broken})")
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(fixed, broken) + 1))
    # integers to the end: 2**n overflows a float past n = 1023, a ratio of Python ints does not
    return min(1.0, 2 * tail / 2**n)


def paired_comparison(before: Mapping[Hashable, bool], after: Mapping[Hashable, bool]) -> dict:
    """Item-by-item comparison of two sets of verdicts (item -> correct) on the items both hold.

    fixed: wrong before, right after; broken: right before, wrong after. Accuracies are on the paired
    items only (None when there are none); `significant` is p < 0.05 on the sign test.
    """
    keys = before.keys() & after.keys()
    fixed = sum(1 for k in keys if after[k] and not before[k])
    broken = sum(1 for k in keys if before[k] and not after[k])
    both_right = sum(1 for k in keys if before[k] and after[k])
    n = len(keys)
    p_value = sign_test_p(fixed, broken)
    return {
        "n": n,
        "fixed": fixed,
        "broken": broken,
        "both_right": both_right,
        "both_wrong": n - fixed - broken - both_right,
        "before_accuracy": (both_right + broken) / n if n else None,
        "after_accuracy": (both_right + fixed) / n if n else None,
        "p_value": p_value,
        "significant": p_value < SIGNIFICANCE,
    }


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None for no trials. Unlike p ± z·se it
    stays inside [0, 1] and does not shrink to a point at 0 or n successes, where agreement figures often sit."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
