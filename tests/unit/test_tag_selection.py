"""Which tags a run keeps: strict thresholds compared like the reference, per-tag thresholds,
top-k, exclusions, and the files they come from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from taglens.errors import TagSelectionError, UnknownTagError
from taglens.models.joytag_vit import load_tags
from taglens.models.tag_selection import TagSelection, read_tag_list, read_thresholds, split_tags
from taglens.models.joytag import CONFIG as JOYTAG

from taglens.models.tagnames import TagNames

from ..conftest import JOYTAG_TINY

TAGS = ("long_hair", "smile", "cat", "^_^", "photoshop_(medium)")
FLOAT32_04 = float(np.float32(0.4))  # 0.4000000059604645


def kept(selection: TagSelection, scores, tags=TAGS):
    resolved = selection.resolve(tags, JOYTAG.threshold)
    return [(t.tag, t.score) for t in resolved.select(np.asarray(scores, dtype=np.float32))]


def test_threshold_is_strictly_greater_and_compared_in_float32_like_the_reference():
    above = float(np.nextafter(np.float32(0.4), np.float32(1)))
    scores = [FLOAT32_04, above, 0.39, 0.9, 0.0]
    assert [t for t, _ in kept(TagSelection(0.4), scores)] == ["^_^", "smile"]
    # The reference: `score > 0.4` on a float32 torch tensor (the scalar becomes float32 too).
    reference = [bool(torch.tensor(s, dtype=torch.float32) > 0.4) for s in scores]
    assert reference == [False, True, False, True, False]


def test_tags_come_highest_score_first_ties_in_tag_list_order():
    assert kept(TagSelection(0.1), [0.5, 0.9, 0.5, 0.2, 0.05]) == [
        ("smile", pytest.approx(0.9)), ("long_hair", 0.5), ("cat", 0.5), ("^_^", pytest.approx(0.2))]


def test_scores_are_python_floats_of_the_float32_values():
    (tag, score), = kept(TagSelection(0.5), [0.1, 0.1, 0.1, 0.1, 0.7])
    assert tag == "photoshop_(medium)" and type(score) is float and score == float(np.float32(0.7))


def test_per_tag_thresholds_replace_the_global_one():
    selection = TagSelection(0.5, thresholds={"cat": 0.05, "smile": 0.95})
    assert [t for t, _ in kept(selection, [0.6, 0.9, 0.1, 0.6, 0.01])] == ["long_hair", "^_^", "cat"]


def test_top_k_keeps_the_best_of_those_that_pass():
    assert [t for t, _ in kept(TagSelection(0.0, top_k=2), [0.3, 0.8, 0.6, 0.7, 0.1])] == ["smile", "^_^"]
    assert [t for t, _ in kept(TagSelection(0.65, top_k=5), [0.3, 0.8, 0.6, 0.7, 0.1])] == ["smile", "^_^"]


def test_exclude_wins_over_everything_and_accepts_spaces_for_underscores():
    selection = TagSelection(0.0, thresholds={"cat": 0.0}, exclude=frozenset({"cat", "long hair"}))
    assert [t for t, _ in kept(selection, [0.9, 0.8, 0.99, 0.7, 0.6])] == ["smile", "^_^", "photoshop_(medium)"]


def test_names_match_with_spaces_for_underscores_and_in_any_case():
    selection = TagSelection(0.0, thresholds={" Long  Hair ": 0.95}, exclude=frozenset({"CAT", "Photoshop (medium)"}))
    assert [t for t, _ in kept(selection, [0.9, 0.8, 0.99, 0.7, 0.6])] == ["smile", "^_^"]
    assert TagNames(["XD", "long_hair"]).resolve(["xd", "long hair", "long_hair"]) == ["XD", "long_hair", "long_hair"]
    assert TagNames(["^_^", ":d"]).resolve(["^_^", ":D"]) == ["^_^", ":d"]


def test_unknown_names_are_an_error_naming_them_and_the_closest_names():
    with pytest.raises(UnknownTagError, match=r"no tags named 'catt' \(did you mean 'cat'\?\), 'dgo'$") as caught:
        TagSelection(exclude=frozenset({"dgo", "catt"})).resolve(TAGS, JOYTAG.threshold)
    assert caught.value.unknown == ["catt", "dgo"] and isinstance(caught.value, TagSelectionError)
    with pytest.raises(TagSelectionError, match="'nope'"):
        TagSelection(thresholds={"nope": 0.3}).resolve(TAGS, JOYTAG.threshold)


@pytest.mark.parametrize("kwargs", [
    {"threshold": 1.5}, {"threshold": -0.1}, {"threshold": "0.4"}, {"thresholds": {"cat": 2}},
    {"top_k": 0}, {"top_k": 2.5}, {"exclude": "cat"},
])
def test_invalid_selections_are_refused(kwargs):
    with pytest.raises(TagSelectionError):
        TagSelection(**kwargs)


def test_the_fixture_tags_at_the_default_threshold():
    expected = json.loads((JOYTAG_TINY / "expected.json").read_text())
    tags = load_tags(JOYTAG_TINY)
    resolved = TagSelection().resolve(tags, JOYTAG.threshold)
    for entry in expected["images"]:
        chosen = resolved.select(np.asarray(entry["scores"], dtype=np.float32))
        assert {t.tag for t in chosen} == set(entry["tags_above_threshold"])


# ----------------------------------------------------------------------------- files


def test_thresholds_file_with_header_blank_lines_bom_and_quoting(tmp_path):
    path = tmp_path / "thresholds.csv"
    path.write_text('\ufefftag,threshold\n\ncat, 0.25\n"photoshop_(medium)",0.7\n^_^,1\n', encoding="utf-8")
    assert read_thresholds(path) == {"cat": 0.25, "photoshop_(medium)": 0.7, "^_^": 1.0}
    path.write_text("cat,0.25\nsmile,0.5\n")  # no header
    assert read_thresholds(path) == {"cat": 0.25, "smile": 0.5}


@pytest.mark.parametrize("text, message", [
    ("cat,0.2\nsmile,high\n", r":2: threshold 'high' is not a number"),
    ("cat,0.2\ncat,0.3\n", r":2: 'cat' is listed twice"),
    ("cat,0.2,extra\n", r":1: expected 'tag,threshold'"),
    ("cat,1.2\n", r":1: threshold for 'cat' must be a number from 0 to 1"),
])
def test_bad_thresholds_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(TagSelectionError, match=message):
        read_thresholds(path)


def test_missing_files_are_errors(tmp_path):
    with pytest.raises(TagSelectionError, match="cannot read thresholds file"):
        read_thresholds(tmp_path / "nope.csv")
    with pytest.raises(TagSelectionError, match="cannot read tag list"):
        read_tag_list(tmp_path / "nope.txt")


def test_tag_lists_one_per_line_or_comma_separated(tmp_path):
    path = tmp_path / "exclude.txt"
    path.write_text("cat\nlong_hair, smile\n\n  ^_^  \n")
    assert read_tag_list(path) == ["cat", "long_hair", "smile", "^_^"]
    assert split_tags(" a, b,,c ") == ["a", "b", "c"]


def test_from_files_combines_everything(tmp_path):
    (tmp_path / "t.csv").write_text("cat,0.05\n")
    (tmp_path / "x.txt").write_text("smile\n")
    selection = TagSelection.from_files(threshold=0.5, thresholds_file=tmp_path / "t.csv", top_k=3,
                                        exclude=["^_^"], exclude_file=tmp_path / "x.txt")
    assert selection == TagSelection(0.5, {"cat": 0.05}, 3, frozenset({"^_^", "smile"}))
    assert [t for t, _ in kept(selection, [0.6, 0.9, 0.1, 0.9, 0.7])] == ["photoshop_(medium)", "long_hair", "cat"]


def test_selections_compare_and_hash_by_value():
    a = TagSelection(0.3, {"cat": 0.1, "smile": 0.2}, 5, frozenset({"^_^"}))
    b = TagSelection(0.3, {"smile": 0.2, "cat": 0.1}, 5, frozenset({"^_^"}))
    assert a == b and hash(a) == hash(b) and a != TagSelection(0.3)
