"""Single-label classification metrics on the host (NumPy): logits [N, C], labels int [N]."""

from __future__ import annotations

import numpy as np


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example -log softmax(logits)[label] in float64: logits [N, C], labels [N] -> [N]."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(z)), labels]


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool [N]: fewer than k classes score strictly above the true class (ties count for it)."""
    logits = np.asarray(logits)
    true = logits[np.arange(len(logits)), labels]
    return (logits > true[:, None]).sum(axis=1) < k
