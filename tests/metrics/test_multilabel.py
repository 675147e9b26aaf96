"""Multi-label metrics against scikit-learn and hand-worked cases."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, fbeta_score, recall_score

from jwsol.metrics import multilabel as M


def random_data(seed, n=200, c=6, ties=False):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(n, c)) < rng.uniform(0.05, 0.5, c)).astype(int)
    scores = rng.normal(size=(n, c)) + 1.5 * labels
    if ties:
        scores = np.round(scores)  # many exact ties
    return scores, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_ap_matches_sklearn(seed, ties):
    scores, labels = random_data(seed, ties=ties)
    mean, ap = M.mean_average_precision(scores, labels)
    expected = average_precision_score(labels, scores, average=None)
    np.testing.assert_allclose(ap, expected, rtol=1e-12)
    assert mean == pytest.approx(average_precision_score(labels, scores, average="macro"))


def test_ap_hand_worked():
    # Ranked: +, -, +, -  -> precision at the positives 1 and 2/3 -> AP = (1 + 2/3) / 2.
    assert M.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # All scores equal: one threshold, recall 1 at precision 2/4.
    assert M.average_precision([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert average_precision_score([1, 0, 1, 0], [0.3] * 4) == pytest.approx(0.5)
    # A tie between a positive and a negative at the top counts both at once.
    assert M.average_precision([0.9, 0.9, 0.1], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_class_without_positive_is_nan_and_excluded():
    scores, labels = random_data(5)
    labels[:, 2] = 0
    mean, ap = M.mean_average_precision(scores, labels)
    assert np.isnan(ap[2])
    keep = [0, 1, 3, 4, 5]
    assert mean == pytest.approx(average_precision_score(labels[:, keep], scores[:, keep]))


def test_valid_mask_drops_entries():
    scores, labels = random_data(6)
    valid = np.random.default_rng(0).uniform(size=labels.shape) < 0.8
    _, ap = M.mean_average_precision(scores, labels, valid)
    for c in range(labels.shape[1]):
        rows = valid[:, c]
        assert ap[c] == pytest.approx(average_precision_score(labels[rows, c], scores[rows, c]))


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.5])
def test_recall_and_fbeta_match_sklearn(threshold):
    scores, labels = random_data(7)
    predicted = (scores >= threshold).astype(int)
    recall = M.recall_at(scores, labels, threshold)
    assert recall["micro"] == pytest.approx(recall_score(labels, predicted, average="micro"))
    assert recall["macro"] == pytest.approx(recall_score(labels, predicted, average="macro"))
    np.testing.assert_allclose(recall["per_class"], recall_score(labels, predicted, average=None))
    for beta in (0.5, 1.0, 2.0):
        f = M.fbeta(scores, labels, threshold, beta)
        assert f["micro"] == pytest.approx(
            fbeta_score(labels, predicted, beta=beta, average="micro")
        )
        assert f["macro"] == pytest.approx(
            fbeta_score(labels, predicted, beta=beta, average="macro")
        )


def test_recall_threshold_is_inclusive_and_handles_empty_classes():
    scores = np.array([[0.5, 0.2], [0.4, 0.9]])
    labels = np.array([[1, 0], [1, 0]])
    recall = M.recall_at(scores, labels, 0.5)
    assert recall["micro"] == 0.5 and recall["macro"] == 0.5
    assert np.isnan(recall["per_class"][1])


def test_tail_accuracy_by_hand():
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.6, 0.6], [0.3, 0.95], [0.55, 0.1]])
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0]])
    thresholds, curve, mean = M.tail_accuracy(scores, labels, top=3, num_thresholds=3)
    # t_max = 0.95: thresholds 0.5, 0.65, 0.8.
    np.testing.assert_allclose(thresholds, [0.5, 0.65, 0.8])
    # Class 0: top 3 = rows 0 (0.9, +), 1 (0.8, -), 2 (0.6, +): t=0.5 -> 2/3, 0.65 -> 1/2,
    # 0.8 -> 1/2. Class 1: top 3 = rows 3 (0.95, +), 1 (0.7, +), 2 (0.6, +): 1, 1, 1.
    np.testing.assert_allclose(curve, [(2 / 3 + 1) / 2, 0.75, 0.75])
    assert mean == pytest.approx(np.mean([(2 / 3 + 1) / 2, 0.75, 0.75]))
    # An entry left out by `valid` is neither ranked nor counted; a class whose top images all
    # score below t is left out of that threshold's mean.
    valid = np.ones_like(labels, bool)
    valid[1, 0] = False
    _, curve, _ = M.tail_accuracy(scores, labels, valid, top=3, num_thresholds=3)
    # Class 0 top 3 now rows 0, 2, 4 (all positive): 1 at every t (0.55 < 0.65 drops out).
    np.testing.assert_allclose(curve, [1.0, 1.0, 1.0])
    low = np.array([[0.1], [0.2]])
    _, curve, mean = M.tail_accuracy(low, np.array([[1], [0]]), top=2, num_thresholds=2)
    assert np.isnan(curve).all() and np.isnan(mean)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        M.mean_average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0 or 1"):
        M.recall_at(np.zeros((2, 2)), np.full((2, 2), 2))
