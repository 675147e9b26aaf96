"""Multi-label classification metrics on the host (NumPy).

`scores: [N, C]` (any monotone score: logits or probabilities), `labels: [N, C]` in {0, 1}
(bool works). An optional `valid: [N, C]` bool drops entries from every metric (e.g. VOC's
"difficult only" image-level labels).

Average precision is scikit-learn's `average_precision_score` (non-interpolated):
AP = sum over distinct score thresholds t, from high to low, of (R(t) - R(t_prev)) * P(t),
with P, R the precision and recall of `score >= t`. Entries with equal scores enter together,
so an all-equal column has AP = its positive rate. A class without positives has no defined
AP: we report NaN and leave it out of the mean (scikit-learn would warn and give 0 or -0).
`tail_accuracy` is seed 003's precision of each class's most confident images over thresholds.
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP of one class: `scores: [N]`, `labels: [N]` -> float (NaN if no
    positive)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    tp = np.cumsum(labels)
    seen = np.arange(1, len(labels) + 1)
    # Evaluate only at the last entry of each run of equal scores: ties enter together.
    last = np.r_[scores[1:] != scores[:-1], True]
    tp, seen = tp[last], seen[last]
    precision = tp / seen
    recall_step = np.diff(np.r_[0, tp]) / positives
    return float(np.sum(recall_step * precision))


def mean_average_precision(
    scores: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """mAP over classes: `scores, labels: [N, C]` -> (mean over classes with a positive,
    ap [C] with NaN for classes without one). mAP is NaN if no class has a positive."""
    scores, labels, valid = _check(scores, labels, valid)
    ap = np.array(
        [
            average_precision(scores[valid[:, c], c], labels[valid[:, c], c])
            for c in range(scores.shape[1])
        ]
    )
    defined = ap[~np.isnan(ap)]
    return (float(defined.mean()) if len(defined) else float("nan")), ap


def recall_at(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float = 0.5,
    valid: np.ndarray | None = None,
) -> dict:
    """Recall of the predictions `scores >= threshold`.

    Returns a dict:
      micro: all positive entries pooled: sum TP / sum positives (NaN if no positive).
      macro: mean over classes with a positive of the per-class recall.
      per_class: [C], NaN for classes without a positive.
    """
    scores, labels, valid = _check(scores, labels, valid)
    predicted = (scores >= threshold) & valid
    positive = labels & valid
    tp = np.sum(predicted & positive, axis=0)
    count = np.sum(positive, axis=0)
    return _summarise(tp, count)


def fbeta(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float = 0.5,
    beta: float = 1.0,
    valid: np.ndarray | None = None,
) -> dict:
    """F-beta of the predictions `scores >= threshold`: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN
    + FP).

    Returns a dict: micro (counts pooled over classes), macro (mean over classes where the
    score is defined, i.e. some positive or some predicted positive), per_class [C] (NaN
    where undefined).
    """
    scores, labels, valid = _check(scores, labels, valid)
    predicted = (scores >= threshold) & valid
    positive = labels & valid
    tp = np.sum(predicted & positive, axis=0)
    fp = np.sum(predicted & ~positive, axis=0)
    fn = np.sum(~predicted & positive, axis=0)
    b2 = beta * beta
    return _summarise((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def tail_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    top: int = 50,
    num_thresholds: int = 20,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Seed 003's tail accuracy: how often the most confident positives are right.

    scores [N, C] in [0, 1] (sigmoid outputs), labels [N, C] in {0, 1}, valid [N, C] bool
    (entries with False are left out, e.g. VOC's difficult-only labels).
    For class c, T_c = the `top` valid images with the highest score (ties: lower index first).
    Thresholds t_j = 0.5 + j * (t_max - 0.5) / num_thresholds, j = 0 .. num_thresholds - 1,
    with t_max the highest valid score of all classes. Then

        tailacc_c(t) = #{i in T_c : s_ic >= t and y_ic = 1} / #{i in T_c : s_ic >= t}

    (undefined when no image of T_c reaches t), tailacc(t) = mean over the classes where it is
    defined, and the reported value = mean of tailacc(t) over the thresholds where it is defined.
    Returns (thresholds [M], tailacc(t) [M] with NaN where undefined, mean (NaN if none)).
    """
    scores, labels, valid = _check(scores, labels, valid)
    t_max = float(scores[valid].max()) if valid.any() else 0.5
    thresholds = 0.5 + np.arange(num_thresholds) * (max(t_max, 0.5) - 0.5) / num_thresholds
    per_class = np.full((scores.shape[1], num_thresholds), np.nan)
    for c in range(scores.shape[1]):
        rows = np.flatnonzero(valid[:, c])
        best = rows[np.argsort(-scores[rows, c], kind="stable")[:top]]
        above = scores[best, c][:, None] >= thresholds[None, :]  # [top, M]
        count = above.sum(axis=0)
        hits = (above & labels[best, c][:, None]).sum(axis=0)
        per_class[c] = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    with np.errstate(invalid="ignore"):
        defined = ~np.isnan(per_class)
        curve = np.where(
            defined.any(axis=0),
            np.nansum(per_class, axis=0) / np.maximum(defined.sum(axis=0), 1),
            np.nan,
        )
    finite = curve[~np.isnan(curve)]
    return thresholds, curve, float(finite.mean()) if len(finite) else float("nan")


def _summarise(numerator: np.ndarray, denominator: np.ndarray) -> dict:
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(denominator > 0, numerator / denominator, np.nan)
        total = denominator.sum()
    defined = per_class[~np.isnan(per_class)]
    return {
        "micro": float(numerator.sum() / total) if total > 0 else float("nan"),
        "macro": float(defined.mean()) if len(defined) else float("nan"),
        "per_class": per_class,
    }


def _check(scores, labels, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must both be [N, C], got {scores.shape} and {labels.shape}"
        )
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(labels)}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    valid = np.ones(scores.shape, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != scores.shape:
        raise ValueError(f"valid must be {scores.shape}, got {valid.shape}")
    return scores, labels.astype(bool), valid
