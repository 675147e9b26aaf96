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


def canvas_map_on_image(
    cam: np.ndarray, canvas: int, image_size: tuple[int, int], out_size: tuple[int, int]
) -> np.ndarray:
    """A map [h, w] over the padded S x S canvas (S = canvas) -> float32 [H', W'] in [0, 1]
    over the image only: the image's top-left `image_size` part, stretched to `out_size`."""
    from jwsol.viz import gradcam

    h, w = image_size
    on_canvas = gradcam.upsample(np.asarray(cam)[None], canvas, canvas)[:, :h, :w]
    return gradcam.normalise(gradcam.upsample(on_canvas, *out_size))[0]


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
    score (those at or below --score-threshold left out, the best kept), and a picture of the
    layer4 Grad-CAM of the best class over the whole resized image."""

    def __init__(self, task, options: PredictOptions):
        self.task, self.top_k = task, int(options.top_k)
        self.threshold = options.score_threshold
        self.canvas = int(task.config.data.image_size)

    def batches(self, images_, files, batch_size):
        for batch in unlabelled_batches(self.task, images_, files, batch_size):
            finished = self.task._finish(batch)  # the crops and thumbnails its evaluation sees
            yield dict(finished, canvas=batch["image"], image_size=batch["image_size"])

    def predict(self, variables, batch):
        """`Task.predict`'s scores (over the crops where the run used them), and the Grad-CAM of
        the best class on the whole padded canvas (the ResNet pools globally: any size fits)."""
        import jax.numpy as jnp

        from jwsol.ops.gradcam import resnet_gradcam

        outputs = self.task.predict(variables, batch)
        best = jnp.argmax(outputs["logits"], axis=-1)
        cam = resnet_gradcam(self.task.model, variables, batch["canvas"], best)
        return dict(outputs, cam=cam["maps"])

    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        names = self.task.class_names
        out = []
        for i, scores in enumerate(np.asarray(outputs["scores"], np.float64)):
            best = top_classes(scores, names, self.top_k, self.threshold)
            out.append(
                {
                    "classes": [class_entry(names, c, p) for c, p in best],
                    "_cam": outputs["cam"][i],
                    "_image_size": tuple(int(v) for v in batch["image_size"][i]),
                }
            )
        return out

    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        heat = canvas_map_on_image(
            record["_cam"], self.canvas, record["_image_size"], image.shape[:2]
        )
        best = record["classes"][0]
        empty = np.zeros([0, 4])
        maps = [ClassMap(best["name"], heat, empty, empty, f"p={best['score']:.2f}")]
        title = ", ".join(f"{e['name']} {e['score']:.2f}" for e in record["classes"])
        return heatmap_picture(image, maps, title)
