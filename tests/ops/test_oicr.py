import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jwsol.ops import oicr


def _iou(a, b):
    """IoU of two boxes, written out (continuous coordinates, no +1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(scores, boxes, image_labels, mask, fg_iou=0.5, ignore_below=0.0, targets=None):
    """The OICR rule as loops: pseudo boxes per present class in order, then per proposal;
    with a `targets` array [R, 4], each proposal's nearest pseudo box is written into it."""
    scores = np.array(scores, np.float64)
    scores[~mask] = -np.inf
    num_r = len(boxes)
    gt = []  # (class, proposal index, score)
    if mask.any():
        for c in range(scores.shape[1]):
            if image_labels[c] > 0.5:
                best = 0
                for r in range(num_r):
                    if scores[r, c] > scores[best, c]:
                        best = r
                gt.append((c, best, scores[best, c]))
                scores[best, :] = 0.0
    labels, weights = np.zeros(num_r, np.int32), np.zeros(num_r, np.float32)
    if not gt:
        return labels, weights
    for r in range(num_r):
        if not mask[r]:
            continue
        best_iou, best_g = -1.0, 0
        for g, (_, index, _) in enumerate(gt):
            value = _iou(boxes[r], boxes[index])
            if value > best_iou:
                best_iou, best_g = value, g
        c, index, score = gt[best_g]
        if targets is not None:
            targets[r] = boxes[index]
        labels[r] = c + 1 if best_iou >= fg_iou else 0
        weights[r] = 0.0 if (ignore_below > 0 and best_iou < ignore_below) else score
    return labels, weights


def _random_case(rng, num_r=12, num_c=4, coarse=False):
    xy = rng.uniform(0, 40, (num_r, 2))
    wh = rng.uniform(5, 30, (num_r, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    if coarse:  # few distinct values: ties in score and in IoU
        boxes = np.round(boxes / 10) * 10 + np.array([0, 0, 5, 5], np.float32)
        scores = rng.integers(0, 3, (num_r, num_c)).astype(np.float32) / 4
    else:
        scores = rng.uniform(0, 1, (num_r, num_c)).astype(np.float32)
    image_labels = (rng.uniform(size=num_c) < 0.5).astype(np.float32)
    mask = rng.uniform(size=num_r) < 0.8
    return scores, boxes, image_labels, mask


@pytest.mark.parametrize("ignore_below", [0.0, 0.1])
@pytest.mark.parametrize("coarse", [False, True])
def test_matches_the_loop_reference_on_random_cases(coarse, ignore_below):
    rng = np.random.default_rng(3 + coarse)
    fn = jax.jit(lambda *a: oicr.pseudo_labels(*a, fg_iou=0.5, ignore_below=ignore_below))
    for _ in range(40):
        scores, boxes, image_labels, mask = _random_case(rng, coarse=coarse)
        labels, weights = fn(scores, boxes, image_labels, mask)
        want_labels, want_weights = _reference(scores, boxes, image_labels, mask, 0.5, ignore_below)
        np.testing.assert_array_equal(np.asarray(labels), want_labels)
        np.testing.assert_allclose(np.asarray(weights), want_weights, rtol=1e-6)


def test_pseudo_targets_are_the_nearest_pseudo_box_of_the_loop_reference():
    rng = np.random.default_rng(11)
    fn = jax.jit(oicr.pseudo_targets)
    for _ in range(40):
        scores, boxes, image_labels, mask = _random_case(rng)
        labels, weights, targets = fn(scores, boxes, image_labels, mask)
        want_targets = np.zeros_like(boxes)
        want_labels, want_weights = _reference(
            scores, boxes, image_labels, mask, targets=want_targets
        )
        np.testing.assert_array_equal(np.asarray(labels), want_labels)
        np.testing.assert_allclose(np.asarray(weights), want_weights, rtol=1e-6)
        fg = want_labels > 0
        np.testing.assert_array_equal(np.asarray(targets)[fg], want_targets[fg])


def test_one_proposal_best_for_two_classes_wins_only_the_first():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([[0.9, 0.8], [0.1, 0.5], [0.2, 0.1]], np.float32)
    labels, weights = oicr.pseudo_labels(scores, boxes, np.ones(2, np.float32), np.ones(3, bool))
    # Class 0 takes proposal 0 (0.9); its row is zeroed, so class 1 takes proposal 1 (0.5).
    np.testing.assert_array_equal(labels, [1, 2, 1])  # proposal 2 overlaps proposal 0 by 0.9
    np.testing.assert_allclose(weights, [0.9, 0.5, 0.9])


def test_no_positive_class_or_no_valid_proposal_gives_zero_weights():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
    scores = np.full((2, 3), 0.5, np.float32)
    for image_labels, mask in (
        (np.zeros(3, np.float32), np.ones(2, bool)),
        (np.ones(3, np.float32), np.zeros(2, bool)),
    ):
        labels, weights = oicr.pseudo_labels(scores, boxes, image_labels, mask)
        np.testing.assert_array_equal(labels, 0)
        np.testing.assert_array_equal(weights, 0.0)


def test_padded_proposals_never_become_pseudo_boxes():
    boxes = np.array([[0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    scores = np.array([[0.2], [0.99]], np.float32)  # the padded row scores highest
    labels, weights = oicr.pseudo_labels(
        scores, boxes, np.ones(1, np.float32), np.array([True, False])
    )
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_allclose(weights, [0.2, 0.0])


def test_batched_labels_carry_no_gradient():
    rng = np.random.default_rng(0)
    cases = [_random_case(rng) for _ in range(3)]
    scores, boxes, image_labels, mask = (np.stack(x) for x in zip(*cases))

    def total_weight(s):
        _, weights = oicr.batched_pseudo_labels(s, boxes, image_labels, mask)
        return jnp.sum(weights)

    np.testing.assert_array_equal(jax.grad(total_weight)(jnp.asarray(scores)), 0.0)
    labels, _ = oicr.batched_pseudo_labels(scores, boxes, image_labels, mask)
    for n in range(3):
        np.testing.assert_array_equal(labels[n], _reference(*cases[n])[0])
