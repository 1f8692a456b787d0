"""Micro-expression spotting without training (issue #35, first part): brief local movements injected into real
faces are found at their frames, a still face and a held (macro-like) expression give nothing, times do not
depend on the frame rate, and the MEGC interval rule scores as computed by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emonas_edge.data.spotting import MicroEvent, SpotSettings, merge_regions, spot
from emonas_edge.errors import UserError
from emonas_edge.metrics import interval_iou, spotting_scores
from emonas_edge.profile.spotting_synth import REGION_OF, Injection, animate, held, inject


@pytest.fixture(scope="module")
def faces(shared) -> list[np.ndarray]:
    """Four real neutral FER2013 faces (PublicTest)."""
    paths = sorted((shared / "datasets" / "fer2013" / "publictest" / "neutral").glob("*.jpg"))[:4]
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


@pytest.mark.parametrize("move", ["brows", "mouth"])
def test_an_injected_movement_is_found_at_its_frames(faces, move):
    rng = np.random.default_rng(1)
    found = 0
    for face in faces:
        clip = animate(face, 150, 30.0, rng)
        injection = Injection(move, onset=60, length=9, amplitude_px=2.5)
        events = merge_regions(spot(inject(clip, injection), 30.0), spacing=6)
        hits = [e for e in events if interval_iou((e.onset, e.offset), injection.interval) >= 0.5]
        found += bool(hits) and hits[0].region == REGION_OF[move]
        assert len(events) - len(hits) <= 1, events  # at most one stray event in 5 s of a drifting face
    assert found >= 3, f"{move}: found in {found} of {len(faces)} faces"


def test_a_still_face_and_a_held_expression_give_no_micro_events(faces):
    rng = np.random.default_rng(2)
    for face in faces:
        clip = animate(face, 150, 30.0, rng)
        assert len(spot(clip, 30.0)) <= 1
        # a brow raise that rises over 0.3 s and stays: a macro expression, not a micro one
        assert not [e for e in spot(held(clip, "brows", 60, 3.0, rise=9), 30.0) if 55 <= e.apex <= 80]


def test_times_do_not_depend_on_the_frame_rate(faces):
    rng = np.random.default_rng(3)
    clip = inject(animate(faces[0], 150, 30.0, rng), Injection("brows", 60, 9, 2.5))
    at30 = merge_regions(spot(clip, 30.0), 6)
    at60 = merge_regions(spot(np.repeat(clip, 2, axis=0), 60.0), 12)  # the same movement filmed at 60 fps
    assert at30 and at60
    assert min(abs(a.apex_s - b.apex_s) for a in at30 for b in at60) <= 1 / 30 + 1e-9
    assert all(isinstance(e, MicroEvent) and e.strength > 1 for e in at30 + at60)


def test_what_cannot_be_spotted_says_so():
    with pytest.raises(UserError, match="frame rate"):
        spot(np.zeros((40, 64, 64), np.uint8), 0.0)
    assert spot(np.zeros((5, 64, 64), np.uint8), 30.0) == []  # shorter than one window: nothing to compare
    assert SpotSettings(interval_s=0.2).frames(30) == 6 and SpotSettings(interval_s=0.2).frames(60) == 12


def test_megc_interval_rule_scores_as_by_hand():
    truth = [(10, 20), (50, 60), (100, 110)]
    spotted = [(12, 22), (40, 52), (101, 109), (200, 210)]
    # (12,22) vs (10,20): 9/13 = 0.69 -> TP; (40,52) vs (50,60): 3/21 -> no; (101,109) vs (100,110): 9/11 -> TP
    assert interval_iou((12, 22), (10, 20)) == pytest.approx(9 / 13)
    s = spotting_scores(spotted, truth)
    assert (s["tp"], s["precision"], s["recall"]) == (2, 0.5, pytest.approx(2 / 3))
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # one truth is matched once: a second detection of it is a false positive
    assert spotting_scores([(10, 20), (11, 20)], [(10, 20)])["tp"] == 1
    assert spotting_scores([], truth)["f1"] == 0.0
