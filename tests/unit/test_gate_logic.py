"""The quality gate's policy file and its judgement, without servers.

Verdict wording is not asserted beyond the paths it names: the decision is what
these tests pin (allowed or not, which rule, which images).
"""

from __future__ import annotations

import pytest

from clearlake.gate import Policy, Rule, judge

POLICY = """\
max_not_good_percent: 10
rules:
  - prefix: products/
    forbid: [blurry, moire]
  - prefix: banners/
    forbid: [moire]
"""


def test_a_policy_file_is_read_exactly() -> None:
    assert Policy.parse(POLICY) == Policy(
        max_not_good_percent=10.0,
        rules=(Rule("products/", ("blurry", "moire")), Rule("banners/", ("moire",))),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Policy()),  # an empty file: no limit, no rule
        ("max_not_good_percent: 2.5\n", Policy(2.5, ())),
        ("max_not_good_percent: 0\n", Policy(0.0, ())),
        ("rules:\n  - forbid: [blurry]\n", Policy(None, (Rule("", ("blurry",)),))),
        ("rules:\n  - prefix: a/\n    forbid: [1, moire]\n",
         Policy(None, (Rule("a/", ("1", "moire")),))),
        ("rules: []\nmax_not_good_percent: null\n", Policy()),
    ],
)
def test_policy_fields_and_their_defaults(text: str, expected: Policy) -> None:
    assert Policy.parse(text) == expected


@pytest.mark.parametrize("text", ["- a\n- b\n", "just words\n", "42\n"])
def test_a_policy_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be a mapping"):
        Policy.parse(text)


def test_a_limit_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError):
        Policy.parse("max_not_good_percent: lots\n")


def test_no_policy_content_allows_everything() -> None:
    labels = {"a.jpg": "blurry", "b.jpg": "moire"}
    assert judge(Policy(), labels) == []


def test_the_share_of_not_good_images_is_compared_with_the_limit() -> None:
    ten = {f"img{i}.jpg": "good" for i in range(9)} | {"img9.jpg": "blurry"}  # 10 % not good
    assert judge(Policy(10.0), ten) == []  # at the limit: allowed
    assert len(judge(Policy(9.9), ten)) == 1  # above it: refused
    eleven = ten | {"img10.jpg": "not decodable (corrupt)"}  # 2 of 11: 18.2 %
    (reason,) = judge(Policy(10.0), eleven)  # the images are named by what the merge brings
    assert reason == "18.2 % of incoming images are not good (2 of 11; limit 10 %)"


def test_a_limit_of_zero_refuses_one_bad_image_and_nothing_is_judged_on_no_images() -> None:
    assert len(judge(Policy(0.0), {"a.jpg": "good", "b.jpg": "moire"})) == 1
    assert judge(Policy(0.0), {"a.jpg": "good"}) == []
    assert judge(Policy(0.0), {}) == []


def test_a_rule_applies_to_its_prefix_and_its_labels_only() -> None:
    policy = Policy.parse(POLICY.replace("max_not_good_percent: 10\n", ""))
    labels = {
        "products/a.jpg": "blurry",
        "products/b.jpg": "good",
        "banners/c.jpg": "blurry",  # blurry is allowed under banners/
        "banners/d.jpg": "moire",
        "other/e.jpg": "moire",  # no rule covers other/
    }
    reasons = judge(policy, labels)
    assert len(reasons) == 2  # one per broken rule, in the policy's order
    assert "products/a.jpg" in reasons[0] and "products/b.jpg" not in reasons[0]
    assert "banners/d.jpg" in reasons[1] and "banners/c.jpg" not in reasons[1]
    assert not any("other/e.jpg" in r for r in reasons)


def test_the_judgement_is_the_same_every_time() -> None:
    # lakeFS re-runs a pre-merge hook when the destination moves: same input, same answer.
    policy = Policy.parse(POLICY)
    labels = {f"products/{i:03d}.jpg": ("blurry" if i % 3 else "good") for i in range(50)}
    first = judge(policy, labels)
    assert len(first) == 2  # the share, and the products/ rule
    assert judge(policy, labels) == first


def test_a_long_list_of_offenders_is_cut_and_counted() -> None:
    labels = {f"products/{i:03d}.jpg": "blurry" for i in range(25)}
    (reason,) = judge(Policy(None, (Rule("products/", ("blurry",)),)), labels)
    assert "products/009.jpg" in reason and "products/010.jpg" not in reason
    assert reason.endswith("… (+15 more)")
