import jax
import jax.numpy as jnp
import numpy as np
import torch

from jwsol import losses


def reference(outputs, y0, y1, box, cls_weight=1.0, box_weight=1.0, eps=0.0):
    """Loop-based reference of the conditional sliding-window loss."""
    n, h, w, _ = outputs.shape
    total = 0.0
    for b in range(n):
        for i in range(h):
            for j in range(w):
                o = outputs[b, i, j].astype(np.float64)
                p = 1 / (1 + np.exp(-o[0]))
                total += -(y0[b, i, j] * np.log(p) + (1 - y0[b, i, j]) * np.log(1 - p))
                if p > 0.5 and y0[b, i, j] == 1:
                    logits = o[1:11]
                    logp = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
                    target = np.full(10, eps / 10)
                    target[y1[b, i, j]] += 1 - eps
                    total += cls_weight * -np.sum(target * logp)
                    total += box_weight * np.sum((o[11:] - box[b, i, j]) ** 2)
    return total / n


def _case(seed):
    rng = np.random.default_rng(seed)
    outputs = rng.normal(size=(3, 4, 5, 15)).astype(np.float32)
    y0 = (rng.uniform(size=(3, 4, 5)) < 0.4).astype(np.float32)
    y1 = rng.integers(0, 10, (3, 4, 5))
    box = rng.uniform(size=(3, 4, 5, 4)).astype(np.float32)
    return outputs, y0, y1, box


def test_matches_loop_reference():
    for seed in range(3):
        args = _case(seed)
        loss, metrics = losses.sliding_window_loss(*map(jnp.asarray, args))
        np.testing.assert_allclose(float(loss), reference(*args), rtol=1e-5)
        parts = metrics["det_bce"] + metrics["cls_nll"] + metrics["box_se"]
        np.testing.assert_allclose(float(parts), float(loss), rtol=1e-5)


def test_weights_and_label_smoothing_match_loop_reference():
    args = _case(4)
    loss, metrics = losses.sliding_window_loss(*map(jnp.asarray, args), 4.0, 0.5, 0.1)
    np.testing.assert_allclose(float(loss), reference(*args, 4.0, 0.5, 0.1), rtol=1e-5)
    # The reported class term is the smoothed cross-entropy, unweighted.
    smoothed = reference(*args, 1.0, 0.0, 0.1) - float(metrics["det_bce"])
    np.testing.assert_allclose(float(metrics["cls_nll"]), smoothed, rtol=1e-5)


def test_no_gradient_through_the_mask_and_none_to_undetected_windows():
    outputs, y0, y1, box = _case(0)
    grad = jax.grad(lambda o: losses.sliding_window_loss(o, y0, y1, box)[0])(jnp.asarray(outputs))
    detected = (1 / (1 + np.exp(-outputs[..., 0])) > 0.5) & (y0 == 1)
    # Class and box outputs get gradient exactly where the window is truly and confidently positive.
    assert np.all(np.asarray(grad[..., 1:])[~detected] == 0)
    assert np.all(np.abs(np.asarray(grad[..., 11:]))[detected].sum(-1) > 0)
    # The detection logit's gradient is the BCE's alone: (sigmoid - y0) / N.
    expected = (1 / (1 + np.exp(-outputs[..., 0])) - y0) / 3
    np.testing.assert_allclose(np.asarray(grad[..., 0]), expected, rtol=1e-5, atol=1e-7)


def test_image_label_bce_and_its_numpy_twin_match_torch():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(5, 7)).astype(np.float32)
    labels = (rng.uniform(size=(5, 7)) < 0.4).astype(np.float32)
    weights = (rng.uniform(size=(5, 7)) < 0.8).astype(np.float32)
    x = logits.astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    expected = np.sum(weights * bce) / bce.size
    loss, metrics = losses.image_label_bce(jnp.asarray(logits), labels, weights)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    reference = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(weights))(
        torch.tensor(logits), torch.tensor(labels)
    )
    np.testing.assert_allclose(float(loss), reference.item(), rtol=1e-5)
    right = ((logits > 0) == (labels > 0.5)) * weights
    np.testing.assert_allclose(float(metrics["label_accuracy"]), right.sum() / weights.sum())
    unweighted, _ = losses.image_label_bce(jnp.asarray(logits), labels)
    np.testing.assert_allclose(float(unweighted), bce.mean(), rtol=1e-5)
    host = losses.image_label_bce_numpy(logits, labels, weights)
    np.testing.assert_allclose(host, (expected, float(metrics["label_accuracy"])), rtol=1e-6)


def test_image_label_bce_zero_weight_entries_get_no_gradient():
    logits = jnp.asarray([[2.0, -1.0, 0.5]])
    labels = jnp.asarray([[0.0, 1.0, 1.0]])
    weights = jnp.asarray([[1.0, 0.0, 1.0]])
    grad = jax.grad(lambda z: losses.image_label_bce(z, labels, weights)[0])(logits)
    sigmoid = 1.0 / (1.0 + np.exp(-np.array([2.0, 0.5])))
    # d BCE / d z = sigmoid(z) - y, divided by N * C = 3.
    np.testing.assert_allclose(grad[0], [sigmoid[0] / 3, 0.0, (sigmoid[1] - 1) / 3], rtol=1e-6)


def test_oicr_refinement_loss_matches_torch_weighted_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 4, (2, 5)).astype(np.int32)
    weights = rng.uniform(size=(2, 5)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    got = losses.oicr_refinement_loss(probs, labels, weights, mask)
    per = torch.nn.functional.nll_loss(
        torch.log(torch.tensor(probs)).reshape(-1, 4), torch.tensor(labels).long().reshape(-1),
        reduction="none",
    ).reshape(2, 5) * torch.tensor(weights) * torch.tensor(mask)  # fmt: skip
    want = (per.sum(1) / torch.tensor(mask).sum(1)).mean()
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_box_regression_loss_matches_a_numpy_loop():
    rng = np.random.default_rng(1)
    n, r, c = 2, 6, 3
    xy = rng.uniform(0, 50, (n, r, 2))
    proposals = np.concatenate([xy, xy + rng.uniform(5, 30, (n, r, 2))], -1).astype(np.float32)
    targets = proposals + rng.normal(0, 4, (n, r, 4)).astype(np.float32)
    deltas = rng.normal(0, 2, (n, r, c, 4)).astype(np.float32)
    labels = rng.integers(0, c + 1, (n, r)).astype(np.int32)
    weights = rng.uniform(size=(n, r)).astype(np.float32)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]], bool)
    got = losses.box_regression_loss(deltas, proposals, labels, weights, targets, mask)
    per_image = []
    for i in range(n):
        total = 0.0
        for j in range(r):
            if not mask[i, j] or labels[i, j] == 0:
                continue
            p, t = proposals[i, j].astype(np.float64), targets[i, j].astype(np.float64)
            pw, ph, tw, th = p[2] - p[0], p[3] - p[1], t[2] - t[0], t[3] - t[1]
            want = [
                ((t[0] + tw / 2) - (p[0] + pw / 2)) / pw / 0.1,
                ((t[1] + th / 2) - (p[1] + ph / 2)) / ph / 0.1,
                np.log(tw / pw) / 0.2,
                np.log(th / ph) / 0.2,
            ]
            diff = np.abs(deltas[i, j, labels[i, j] - 1] - np.array(want))
            smooth = np.where(diff < 1, 0.5 * diff**2, diff - 0.5)
            total += weights[i, j] * smooth.sum()
        per_image.append(total / mask[i].sum())
    np.testing.assert_allclose(float(got), np.mean(per_image), rtol=1e-4)
