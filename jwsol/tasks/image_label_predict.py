"""Predictions on new images of the jobs trained from image labels on detection batches, other
than the detectors: the localizers (per top class, its heatmap and the box of its largest
component at eval.cam_threshold, as the evaluator extracts it) and the multi-label classifier
(top classes). Shared: `top_classes`, also used by the single-label classifier."""

from __future__ import annotations

import numpy as np

from jwsol.data import detection, images
from jwsol.metrics import coco, localization
from jwsol.tasks.localizer_eval import heatmap_geometry
from jwsol.training.task import Batch, PredictOptions, Predictor
from jwsol.viz.detections import detections_figure
from jwsol.viz.heatmaps import ClassMap, ImageMaps, heatmap_grid


def top_classes(
    scores: np.ndarray, names, k: int, threshold: float | None = None
) -> list[tuple[int, float]]:
    """(class, score) of the `k` best classes by descending score (k <= 0: all), those at or
    below `threshold` left out, but the best one always kept."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if k > 0:
        order = order[:k]
    kept = [(int(c), float(scores[c])) for c in order]
    if threshold is not None:
        kept = kept[:1] + [(c, p) for c, p in kept[1:] if p > threshold]
    return kept


def class_entry(names, c: int, score: float) -> dict:
    return {"category_id": c + 1, "name": str(names[c]), "score": round(score, 6)}


def unlabelled_batches(task, images_: list[np.ndarray], files: list[str], batch_size: int):
    """Detection batches of a user's images for an `ImageLabelTask` (proposals as its config)."""
    data = task.config.data
    recs = images.unlabelled_records(data, task.class_names, files, images_)
    return detection.from_records(recs, data, batch_size).as_numpy_iterator()


def heatmap_picture(image: np.ndarray, maps: list[ClassMap], title: str) -> np.ndarray:
    """The image, then one heatmap overlay per class (with its box): uint8 [H', W', 3]."""
    empty = np.zeros([0, 4])
    return heatmap_grid([ImageMaps(image, empty, [], maps, title)], panel_inches=3.0)


class LocalizerPredictor(Predictor):
    """Per image `{"classes": [{category_id, name, score, bbox [x, y, w, h]}]}`: the top-k
    classes by sigmoid score, each with the box of its heatmap in original pixels."""

    def __init__(self, task, options: PredictOptions):
        self.task, self.top_k = task, int(options.top_k)
        self.threshold = options.score_threshold
        config = task.config
        self.canvas = int(config.data.image_size)
        self.geometry = heatmap_geometry(config)
        self.cam_threshold = float(config.eval.cam_threshold)

    def batches(self, images_, files, batch_size):
        return unlabelled_batches(self.task, images_, files, batch_size)

    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs["logits"], np.float64)))
        names, out = self.task.class_names, []
        for i in range(len(probs)):
            resized = tuple(int(v) for v in batch["image_size"][i])
            original = tuple(int(v) for v in batch["orig_size"][i])
            classes, maps = [], []
            for c, p in top_classes(probs[i], names, self.top_k, self.threshold):
                # Placed straight at the original resolution: its boxes are original pixels.
                heat = localization.heatmap_to_image(
                    outputs["score_map"][i][..., c], self.canvas, resized, original, self.geometry
                )
                prepared = localization.normalize_heatmap(heat)
                box = localization.largest_box(prepared, self.cam_threshold)
                bbox = [float(v) for v in coco.xyxy_to_xywh(box)[0]] if len(box) else []
                classes.append(dict(class_entry(names, c, p), bbox=bbox))
                maps.append(ClassMap(names[c], prepared, np.zeros([0, 4]), box, f"p={p:.2f}"))
            out.append({"classes": classes, "_maps": maps})
        return out

    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        title = f"heatmaps, boxes at cam threshold {self.cam_threshold:g}"
        return heatmap_picture(image, record["_maps"], title)


class MultiLabelPredictor(Predictor):
    """Per image `{"classes": [{category_id, name, score}]}`: the top-k classes by sigmoid
    score (those at or below --score-threshold left out, the best kept)."""

    def __init__(self, task, options: PredictOptions):
        self.task, self.top_k = task, int(options.top_k)
        self.threshold = options.score_threshold

    def batches(self, images_, files, batch_size):
        for batch in unlabelled_batches(self.task, images_, files, batch_size):
            yield self.task._finish(batch)  # the crops and thumbnails its evaluation sees

    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        names = self.task.class_names
        return [
            {
                "classes": [
                    class_entry(names, c, p)
                    for c, p in top_classes(s, names, self.top_k, self.threshold)
                ]
            }
            for s in np.asarray(outputs["scores"], np.float64)
        ]

    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        title = ", ".join(f"{e['name']} {e['score']:.2f}" for e in record["classes"])
        empty = np.zeros([0, 4])
        entry = {"image": image, "gt": empty, "boxes": empty, "text": [], "title": title}
        return detections_figure([entry], ncols=1, inches=6.0)
