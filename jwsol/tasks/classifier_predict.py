"""Predictions on new images of the single-label classifier (top-k classes by softmax and the
layer4 Grad-CAM of the best one) and of the sliding-window net (the best window's class, score
and box), each image resized to the job's input the way its evaluation resizes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from jwsol.data import classification as classification_data
from jwsol.metrics import coco
from jwsol.tasks.image_label_predict import class_entry, heatmap_picture, top_classes
from jwsol.training.task import Batch, PredictOptions, Predictor
from jwsol.viz import gradcam
from jwsol.viz.detections import detections_figure
from jwsol.viz.heatmaps import ClassMap

# ITU-R 601 luma, PIL's RGB -> L conversion: the grey canvases the sliding window learnt on.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class ClassificationPredictor(Predictor):
    """Per image `{"classes": [{category_id, name, score}]}` (softmax, best first) and a
    picture of the Grad-CAM of the best class over the image."""

    def __init__(self, task, options: PredictOptions):
        self.task, self.top_k = task, int(options.top_k)
        self.threshold = options.score_threshold

    def batches(self, images_, files, batch_size):
        del images_  # read by the job's own pipeline from the files, resized as in evaluation
        return classification_data.eval_batches(
            np.asarray(files), np.zeros(len(files), np.int32), batch_size=batch_size,
            process_index=0, process_count=1, **self.task.data_kwargs,
        )  # fmt: skip

    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        names = self.task.class_names
        out = []
        for probs, cam in zip(_softmax(outputs["logits"]), outputs["cam_pred"]):
            best = top_classes(probs, names, self.top_k, self.threshold)
            out.append({"classes": [class_entry(names, c, p) for c, p in best], "_cam": cam})
        return out

    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        h, w = image.shape[:2]
        # The model saw the whole image stretched to its square input: the map spans it all.
        heat = gradcam.normalise(gradcam.upsample(record["_cam"][None], h, w))[0]
        best = record["classes"][0]
        empty = np.zeros([0, 4])
        maps = [ClassMap(best["name"], heat, empty, empty, f"p={best['score']:.2f}")]
        return heatmap_picture(image, maps, "Grad-CAM (layer4) of the best class")


def grey_canvases(images_: list[np.ndarray], size: int) -> np.ndarray:
    """float32 [N, size, size, 1] in [0, 1]: each image's luma resized (bilinear) to the canvas."""
    out = []
    for image in images_:
        luma = (image.astype(np.float32) @ LUMA)[..., None] / 255.0
        out.append(tf.image.resize(luma, [size, size]).numpy())
    return np.stack(out).astype(np.float32)


class SlidingWindowPredictor(Predictor):
    """Per image `{"category_id", "name", "score", "bbox": [x, y, w, h]}` of the best window,
    its box mapped from the canvas back to original pixels."""

    def __init__(self, task, options: PredictOptions):
        self.task = task
        self.size = int(task.config.data.canvas_size)

    def batches(self, images_, files, batch_size):
        del files
        for start in range(0, len(images_), batch_size):
            chunk = images_[start : start + batch_size]
            sizes = np.asarray([i.shape[:2] for i in chunk], np.int32)
            yield {"image": grey_canvases(chunk, self.size), "orig_size": sizes}

    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        boxes = self.task.window_box_to_canvas(outputs)  # [N, 4] canvas pixels
        hw = np.asarray(batch["orig_size"], np.float64)
        scale = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=1) / self.size
        original = coco.xyxy_to_xywh(boxes * scale)
        names = self.task.class_names
        return [
            dict(
                class_entry(names, int(outputs["label"][i]), float(outputs["score"][i])),
                bbox=[round(float(v), 2) for v in original[i]],
            )
            for i in range(len(boxes))
        ]

    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        entry = {
            "image": image,
            "gt": np.zeros([0, 4]),
            "boxes": coco.xywh_to_xyxy([record["bbox"]]),
            "text": [f"{record['name']} {record['score']:.3f}"],
        }
        return detections_figure([entry], ncols=1, inches=6.0)
