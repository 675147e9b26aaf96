"""The PyTorch side of benchmarks/test_vs_torch.py: each job's model, loss and optimizer in torch.

torchvision is not installed for this interpreter, so the torchvision models are rebuilt from
torch.nn with torchvision's structure (AlexNet `features`, ResNet v1.5 blocks), and RoI max
pooling is `roi_pool`, a vectorised pure-torch op with torchvision's bins (checked against
`jwsol.ops.roi_pool`, itself equal to torchvision's, in the benchmark). All tensors are NCHW,
torch's native CPU layout. A job's `step(batch)` runs forward, backward and the optimizer update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------- roi_pool


def _range_tables(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Sparse tables of range maxima of x [N, C, H, W] along H and W.

    Returns (table [N, KH, KW, H, W, C], KH, KW): table[n, i, j, h, w] is the max of
    x[n, :, h : h + 2**i, w : w + 2**j] (clipped at the border).
    """
    height, width = x.shape[2:]
    levels_h = max(1, math.floor(math.log2(height)) + 1)
    levels_w = max(1, math.floor(math.log2(width)) + 1)

    def table(x: torch.Tensor, axis: int, levels: int) -> list[torch.Tensor]:
        out = [x]
        size = x.shape[axis]
        for k in range(1, levels):
            prev, step = out[-1], 1 << (k - 1)
            shifted = prev.narrow(axis, min(step, size - 1), size - min(step, size - 1))
            pad = [0, 0] * (prev.ndim - axis - 1) + [0, prev.shape[axis] - shifted.shape[axis]]
            out.append(torch.maximum(prev, F.pad(shifted, pad, value=-math.inf)))
        return out

    rows = table(x, 2, levels_h)  # each [N, C, H, W]
    grid = [torch.stack(table(r, 3, levels_w), 1) for r in rows]  # each [N, KW, C, H, W]
    stacked = torch.stack(grid, 1)  # [N, KH, KW, C, H, W]
    return stacked.permute(0, 1, 2, 4, 5, 3).contiguous(), levels_h, levels_w


def _bins(start: torch.Tensor, end: torch.Tensor, size: int, pooled: int):
    """torchvision's bin edges along one axis: rois' [R] rounded start/end -> [R, pooled] each."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)
    step = length[:, None] / pooled
    p = torch.arange(pooled, dtype=torch.float32, device=start.device)
    lo = torch.floor(p * step).long() + start[:, None]
    hi = torch.ceil((p + 1) * step).long() + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)


def roi_pool(
    features: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor, size: int, scale: float
) -> torch.Tensor:
    """torchvision.ops.roi_pool without torchvision. features [N, C, H, W], boxes [R, 4]
    (x1, y1, x2, y2 input pixels), image_index [R] -> [R, C, size, size].

    Each bin's max is the max of four overlapping power-of-two blocks of a sparse table, so the
    whole op is four row gathers: no per-roi Python loop (a loop of 2,000 crops takes seconds).
    """
    channels, height, width = features.shape[1:]
    table, levels_h, levels_w = _range_tables(features)
    flat = table.reshape(-1, channels)
    # std::round of non-negative coordinates (torch.round would round halves to even)
    x1, y1, x2, y2 = torch.floor(boxes * scale + 0.5).long().unbind(1)
    h0, h1 = _bins(y1, y2, height, size)  # [R, size]
    w0, w1 = _bins(x1, x2, width, size)
    empty = (h1[:, :, None] <= h0[:, :, None]) | (w1[:, None, :] <= w0[:, None, :])
    kh = torch.floor(torch.log2(torch.clamp(h1 - h0, min=1).float())).long()
    kw = torch.floor(torch.log2(torch.clamp(w1 - w0, min=1).float())).long()
    ha, hb = h0.clamp(max=height - 1), (h1 - (1 << kh)).clamp(0, height - 1)
    wa, wb = w0.clamp(max=width - 1), (w1 - (1 << kw)).clamp(0, width - 1)
    base = (image_index[:, None, None] * levels_h + kh[:, :, None]) * levels_w + kw[:, None, :]
    pooled = None
    for rows in (ha, hb):
        for cols in (wa, wb):
            index = (base * height + rows[:, :, None]) * width + cols[:, None, :]
            block = flat.index_select(0, index.reshape(-1))
            pooled = block if pooled is None else torch.maximum(pooled, block)
    pooled = pooled.reshape(len(boxes), size, size, channels)
    pooled = torch.where(empty[..., None], torch.zeros((), dtype=pooled.dtype), pooled)
    return pooled.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------ models


def alexnet_features(width: float = 1.0) -> nn.Sequential:
    """torchvision AlexNet `features[:12]` (conv1-5 with ReLUs, no last pool); channels x width."""
    c = [max(1, round(v * width)) for v in (64, 192, 384, 256, 256)]
    return nn.Sequential(
        nn.Conv2d(3, c[0], 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(True),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(True),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(True),
    )  # fmt: skip


class Localizer(nn.Module):
    """jwsol.models.localizer.LocalizerAlexNet: conv6 3x3, conv7 1x1, score 1x1, global max."""

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        self.features = alexnet_features(width)
        channels = max(1, round(256 * width))
        self.head = nn.Sequential(
            nn.Conv2d(channels, 256, 3), nn.ReLU(True), nn.Conv2d(256, 256, 1), nn.ReLU(True),
            nn.Conv2d(256, num_classes, 1),
        )  # fmt: skip

    def forward(self, x):
        return torch.amax(self.head(self.features(x)), dim=(2, 3))


class WSDDN(nn.Module):
    """jwsol.models.wsddn.WSDDN on AlexNet: roi_pool, fc6/fc7 with dropout, two streams,
    optionally K OICR refinement heads (softmax over background + classes)."""

    def __init__(self, num_classes: int, fc: int, refinements: int, pool: int, scale: float):
        super().__init__()
        self.features, self.pool, self.scale = alexnet_features(), pool, scale
        self.fc67 = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * pool * pool, fc), nn.ReLU(True),
            nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(True),
        )  # fmt: skip
        self.cls, self.det = nn.Linear(fc, num_classes), nn.Linear(fc, num_classes)
        self.refine = nn.ModuleList(nn.Linear(fc, num_classes + 1) for _ in range(refinements))

    def forward(self, images, proposals, mask):
        n, r = mask.shape
        conv5 = self.features(images)
        index = torch.arange(n, device=mask.device).repeat_interleave(r)
        pooled = roi_pool(conv5, proposals.reshape(-1, 4), index, self.pool, self.scale)
        fc7 = self.fc67(pooled.flatten(1)).reshape(n, r, -1)
        cls = torch.softmax(self.cls(fc7), -1)
        det = self.det(fc7).masked_fill(~mask[..., None], torch.finfo(fc7.dtype).min)
        scores = cls * torch.softmax(det, 1) * mask[..., None]
        refine = [torch.softmax(head(fc7), -1) for head in self.refine]
        return scores, refine


class Block(nn.Module):
    """torchvision's BasicBlock (expansion 1) or Bottleneck (expansion 4, stride on the 3x3)."""

    def __init__(self, inplanes: int, planes: int, stride: int, bottleneck: bool):
        super().__init__()
        out = planes * (4 if bottleneck else 1)
        if bottleneck:
            shapes = [(inplanes, planes, 1, 1), (planes, planes, 3, stride), (planes, out, 1, 1)]
        else:
            shapes = [(inplanes, planes, 3, stride), (planes, out, 3, 1)]
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, k, s, k // 2, bias=False) for i, o, k, s in shapes
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _, _ in shapes)
        self.down = None
        if stride != 1 or inplanes != out:
            self.down = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = x
        for k, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            y = bn(conv(y))
            y = torch.relu(y) if k < len(self.convs) - 1 else y
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet(depth: int, num_classes: int, small_input: bool) -> nn.Sequential:
    """torchvision resnet18/50 (small_input: 3x3 stride-1 stem, no max pool)."""
    bottleneck = depth == 50
    sizes = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    stem = (
        nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        if small_input
        else nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    )
    layers: list[nn.Module] = [stem, nn.BatchNorm2d(64), nn.ReLU(True)]
    if not small_input:
        layers.append(nn.MaxPool2d(3, 2, 1))
    inplanes = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), sizes)):
        for k in range(count):
            layers.append(Block(inplanes, planes, 2 if stage and not k else 1, bottleneck))
            inplanes = planes * (4 if bottleneck else 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inplanes, num_classes)]
    return nn.Sequential(*layers)


def sliding_window_net(layers: Sequence, num_classes: int = 10) -> nn.Sequential:
    """jwsol.models.sliding_window.SlidingWindowNet with BatchNorm: conv (no bias), BN, ReLU."""
    modules: list[nn.Module] = []
    channels = 1
    for layer in layers:
        if layer.kind == "pool":
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride))
            continue
        modules += [
            nn.Conv2d(channels, layer.features, layer.kernel, layer.stride, bias=False),
            nn.BatchNorm2d(layer.features),
            nn.ReLU(True),
        ]
        channels = layer.features
    modules.append(nn.Conv2d(channels, 1 + num_classes + 4, 1))
    return nn.Sequential(*modules)


# ------------------------------------------------------------------------------------ losses


def sliding_window_loss(out, y0, y1, box, cls_weight, box_weight, smoothing):
    """jwsol.losses.sliding_window_loss in torch; out [N, 15, H, W], targets [N, H, W(, 4)]."""
    det, cls, pred = out[:, 0], out[:, 1:-4], out[:, -4:].permute(0, 2, 3, 1)
    bce = F.binary_cross_entropy_with_logits(det, y0, reduction="none")
    mask = ((torch.sigmoid(det) > 0.5) & (y0 > 0.5)).float().detach()
    nll = F.cross_entropy(cls, y1, reduction="none", label_smoothing=smoothing)
    se = torch.sum((pred - box) ** 2, -1)
    return torch.sum(bce + mask * (cls_weight * nll + box_weight * se), (1, 2)).mean()


def wsddn_loss(scores, labels, eps: float = 1e-6):
    """Image-level BCE on the summed region scores: sum over classes, mean over images."""
    s = torch.clamp(scores.sum(1), eps, 1 - eps)
    return -(labels * torch.log(s) + (1 - labels) * torch.log1p(-s)).sum(-1).mean()


@torch.no_grad()
def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[R, 4] x [C, 4] -> [R, C] IoU of (x1, y1, x2, y2) boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter)


@torch.no_grad()
def pseudo_labels(scores, proposals, labels, mask, fg_iou: float = 0.5):
    """OICR's labels [N, R] and weights [N, R] (jwsol.ops.oicr.pseudo_labels), one image at a
    time: per present class the top-scoring free proposal, then IoU >= fg_iou -> that class."""
    out_labels, out_weights = [], []
    for s, boxes, present, valid in zip(scores, proposals, labels, mask):
        s = torch.where(valid[:, None], s, -torch.inf).clone()
        index, top = [], []
        for c in torch.nonzero(present > 0.5).flatten().tolist():
            i = int(torch.argmax(s[:, c]))
            index.append(i)
            top.append(s[i, c])
            s[i] = 0.0
        if not index:
            out_labels.append(torch.zeros(len(boxes), dtype=torch.long))
            out_weights.append(torch.zeros(len(boxes)))
            continue
        classes = torch.nonzero(present > 0.5).flatten()
        overlaps = _iou(boxes, boxes[index])
        best, nearest = overlaps.max(1)
        lab = torch.where(best >= fg_iou, classes[nearest] + 1, 0)
        out_labels.append(torch.where(valid, lab, 0))
        out_weights.append(torch.where(valid, torch.stack(top)[nearest], 0.0))
    return torch.stack(out_labels), torch.stack(out_weights)


def oicr_loss(probs, labels, weights, mask, eps: float = 1e-6):
    """jwsol.losses.oicr_refinement_loss: weighted CE over valid proposals, mean over images."""
    picked = torch.gather(probs, -1, labels[..., None])[..., 0]
    per_region = -weights * torch.log(torch.clamp(picked, min=eps)) * mask
    return (per_region.sum(1) / mask.sum(1).clamp(min=1)).mean()


# --------------------------------------------------------------------------------- optimizer


def optimizer(params, cfg) -> torch.optim.Optimizer:
    """The torch optimizer of a jwsol `config.optimizer` (sgd / adam with L2, adamw)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=bool(cfg.nesterov),
        )  # fmt: skip
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, cfg.learning_rate, (cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(
        params, cfg.learning_rate, (cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )


def train_step(
    model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], opt, dtype: str
) -> Callable[[], float]:
    """One step: forward and loss (`loss_fn(model)`, under bfloat16 autocast if asked),
    backward, update. Returns a function running it and returning the loss."""
    model.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = loss_fn(model)
        loss.float().backward()
        opt.step()
        return float(loss.detach())

    return step
