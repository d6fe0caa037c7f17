"""Which repository paths are input images (`pipeline.Inputs`), without servers."""

from __future__ import annotations

import pytest

from clearlake.pipeline import Inputs


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.jpg", True),
        ("deep/folder/b.JPEG", True),  # extensions are case-insensitive
        ("c.png", True),
        ("d.webp", True),
        ("notes.txt", False),
        ("no_extension", False),
        ("archive.jpg.zip", False),
        ("_clearlake/records/a.jpg.json", False),
        ("_clearlake/x.jpg", False),  # clearlake's own folder is never an input
        ("_lakefs_actions/hook.png", False),
        ("x/_clearlake/y.jpg", True),  # only the top-level folder is clearlake's
    ],
)
def test_by_default_every_image_outside_clearlakes_folders(path: str, expected: bool) -> None:
    assert Inputs().matches(path) is expected


def test_a_prefix_limits_the_inputs_to_a_folder() -> None:
    inputs = Inputs(prefix="images/")
    assert inputs.matches("images/a.jpg")
    assert inputs.matches("images/sub/b.png")
    assert not inputs.matches("other/a.jpg")
    assert not inputs.matches("imagesX/a.jpg") and not Inputs(prefix="images/").matches("a.jpg")


def test_a_glob_is_matched_below_the_prefix_and_replaces_the_extension_rule() -> None:
    inputs = Inputs(prefix="images/", glob="*.raw")
    assert inputs.matches("images/a.raw")
    assert inputs.matches("images/sub/b.raw")  # fnmatch's * crosses folders
    assert not inputs.matches("images/a.jpg")
    assert not inputs.matches("a.raw")
    assert Inputs(glob="cam?/*.jpg").matches("cam1/x.jpg")
    assert not Inputs(glob="cam?/*.jpg").matches("cam12/x.jpg")


def test_a_glob_is_case_sensitive() -> None:
    assert Inputs(glob="*.jpg").matches("a.jpg")
    assert not Inputs(glob="*.jpg").matches("a.JPG")


def test_a_glob_never_reaches_into_clearlakes_folders() -> None:
    assert not Inputs(glob="*").matches("_clearlake/records/a.json")
    assert not Inputs(glob="*").matches("_lakefs_actions/clearlake.yaml")
    assert Inputs(glob="*").matches("anything")
