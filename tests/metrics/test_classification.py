"""Cross-entropy against torch, top-k against torch's topk and the tie rule by hand."""

import numpy as np
import torch

from jwsol.metrics import classification as C


def test_cross_entropy_matches_torch_per_example():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(9, 6)).astype(np.float32) * 20  # large: needs the max shift
    labels = rng.integers(0, 6, 9)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(logits).double(), torch.tensor(labels), reduction="none"
    )
    np.testing.assert_allclose(C.cross_entropy(logits, labels), expected.numpy(), rtol=1e-12)


def test_topk_matches_torch_and_ties_count_for_the_true_class():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 8)).astype(np.float32)
    labels = rng.integers(0, 8, 50)
    for k in (1, 3, 5):
        top = torch.tensor(logits).topk(k, dim=1).indices.numpy()
        np.testing.assert_array_equal(
            C.topk_correct(logits, labels, k), (top == labels[:, None]).any(axis=1)
        )
    tied = np.array([[1.0, 2.0, 2.0, 2.0]])
    # Nothing scores strictly above class 3: top-1 although three classes share the maximum.
    assert C.topk_correct(tied, np.array([3]), 1).tolist() == [True]
    assert C.topk_correct(tied, np.array([0]), 3).tolist() == [False]  # three above it
    assert C.topk_correct(tied, np.array([0]), 4).tolist() == [True]
