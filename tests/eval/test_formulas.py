import numpy as np
import pytest

from mora_agents.eval import formulas
from mora_agents.eval.video import stride_indices


def test_consistency_hand_computed():
    # Similarities given as a table: sim(a, b) = table[a][b].
    table = {0: {1: 0.8, 2: 0.5, 3: -0.4}, 1: {2: 0.6}, 2: {3: 0.9}}

    def sim(a, b):
        return table[a][b]

    # i=1: (0.8 + 0.8)/2 = 0.8; i=2: (0.6 + 0.5)/2 = 0.55; i=3: (0.9 + max(0, -0.4))/2 = 0.45
    assert formulas.consistency([0, 1, 2, 3], sim) == pytest.approx((0.8 + 0.55 + 0.45) / 3)


def test_feature_consistency_uses_cosine_and_clips_negative():
    features = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # i=1: (cos 90deg=0 + 0)/2 = 0; i=2: prev cos=0, first cos=-1 -> 0
    assert formulas.feature_consistency(features) == 0.0
    assert formulas.feature_consistency(np.array([[1.0, 1.0]] * 5)) == pytest.approx(1.0)


def test_consistency_needs_two_frames():
    with pytest.raises(ValueError):
        formulas.feature_consistency(np.ones((1, 4)))


def test_top_flow_magnitude_is_mean_of_top_five_percent():
    flow = np.zeros((20, 20, 2))
    flow[..., 0] = 1.0
    flow[:2, :10] = (3.0, 4.0)  # 20 pixels of magnitude 5 = exactly 5% of 400
    assert formulas.top_flow_magnitude(flow) == pytest.approx(5.0)
    flow[0, 0] = (0.0, 25.0)  # top 20 now: one 25 and nineteen 5s
    assert formulas.top_flow_magnitude(flow) == pytest.approx((25 + 19 * 5) / 20)


@pytest.mark.parametrize(
    ("height", "width", "threshold"),
    [(256, 256, 6.0), (64, 64, 1.5), (320, 512, 7.5), (576, 1024, 13.5), (480, 848, 11.25)],
)
def test_motion_threshold(height, width, threshold):
    assert formulas.motion_threshold(height, width) == pytest.approx(threshold)


@pytest.mark.parametrize(
    ("sampled", "required"),
    [(16, 4), (2, 0), (6, 2), (10, 2), (14, 4), (17, 4), (49, 12), (25, 6)],
)
def test_required_pairs_uses_python_rounding(sampled, required):
    assert formulas.required_moving_pairs(sampled) == required


def test_is_dynamic_rule():
    assert formulas.is_dynamic([1.0, 2.0, 3.0], threshold=1.5, required=2)
    assert not formulas.is_dynamic([1.0, 1.5, 3.0], threshold=1.5, required=2)  # equal is not above
    assert formulas.is_dynamic([0.0], threshold=1.5, required=0)  # VBench: zero required -> dynamic
    assert not formulas.is_dynamic([], threshold=1.5, required=0)


@pytest.mark.parametrize(
    ("num_frames", "fps", "expected"),
    [
        (16, 8.0, list(range(16))),
        (16, 16.0, list(range(0, 16, 2))),
        (49, 24.0, list(range(0, 49, 3))),
        (50, 23.976, list(range(0, 50, 3))),
        (61, 30.0, list(range(0, 61, 4))),  # round(3.75) = 4
        (20, 12.0, list(range(0, 20, 2))),  # round(1.5) = 2
        (21, 20.0, list(range(0, 21, 2))),  # round(2.5) = 2 (banker's rounding, as VBench)
        (10, 4.0, list(range(10))),
    ],
)
def test_dynamic_degree_sampling(num_frames, fps, expected):
    assert stride_indices(num_frames, fps) == expected
