"""Reading a user's own image files (JPEG/PNG, files or folders) for prediction, and the
detection records of such unlabelled images (proposals computed as the run's config says).

Host-side NumPy and PIL only. Unreadable or non-image files are reported by name and skipped
(counted by the caller from the returned list); grayscale, palette and RGBA images become RGB.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from jwsol.data import proposals, records
from jwsol.data.proposals import search as proposal_search
from jwsol.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(paths: Sequence[str]) -> list[str]:
    """Files named in `paths` (kept whatever their suffix, so a non-image is reported when read)
    and the JPEG/PNG files under each folder (recursively, sorted). A missing path: DataError."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = [
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_SUFFIXES)
            ]
            files.extend(sorted(found))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder; pass JPEG/PNG files or folders.")
    return files


def read_rgb(path: str) -> np.ndarray:
    """uint8 [H, W, 3] of the image file `path`; DataError naming it when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "P"):
                # Transparent pixels are shown on white, as a viewer shows them.
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            return np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable JPEG/PNG image ({type(e).__name__}).") from e


def read_images(files: Sequence[str]) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
    """(files read, their RGB arrays, (file, reason) of each skipped one, logged by name)."""
    kept, images, skipped = [], [], []
    for path in files:
        try:
            images.append(read_rgb(path))
            kept.append(path)
        except DataError as e:
            skipped.append((path, str(e)))
            logging.warning("Skipped: %s", e)
    return kept, images, skipped


def _cache_ids(files: Sequence[str]) -> list[str]:
    """Proposal-cache ids: the absolute path with size and mtime, so an edited file is redone."""
    ids = []
    for path in files:
        stat = os.stat(path)
        ids.append(f"{os.path.abspath(path)}@{stat.st_size}:{stat.st_mtime_ns}")
    return ids


def image_proposals(
    config_data: ml_collections.ConfigDict, files: Sequence[str], images: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Cleaned proposals float32 [P, 4] (original pixels) per image, computed as the run's
    `data.proposals` says; a run trained on `.mat` files gets selective search with its defaults
    (new images have no file). Empty arrays with method 'none'."""
    spec = records.proposal_spec(config_data.proposals)
    if spec.method == "none":
        return [np.zeros([0, 4], np.float32) for _ in images]
    search = spec.search
    if search is None:
        search = proposal_search.SearchSettings()
        logging.warning(
            "the run read proposals from %s; new images get selective search (%s mode).",
            config_data.proposals.mat_file,
            search.mode,
        )
    boxes = proposal_search.compute_cached(
        list(images), _cache_ids(files), search,
        cache_dir=os.path.join(config_data.cache_dir, "proposals"), tag="predict",
        split="images", num_workers=int(config_data.proposals.num_workers),
    )  # fmt: skip
    cleaned = []
    for box, image in zip(boxes, images, strict=True):
        h, w = image.shape[:2]
        box, _ = proposals.clean_proposals(
            box, None, h, w, min_size=spec.min_size, top_k=spec.top_k
        )
        cleaned.append(box)
    return cleaned


def unlabelled_records(
    config_data: ml_collections.ConfigDict,
    class_names: Sequence[str],
    files: Sequence[str],
    images: Sequence[np.ndarray],
) -> records.Records:
    """Records of images without labels or true boxes, for `jwsol.data.detection.from_records`.
    An image left without a proposal keeps an empty list (the model then scores nothing)."""
    c = len(class_names)
    boxes = image_proposals(config_data, files, images)
    max_props = int(config_data.max_proposals)
    empty = np.zeros([0, 4], np.float32)
    return records.Records(
        image_ids=[os.path.basename(f) for f in files],
        images=list(images),
        image_kind="raw",
        sizes=np.asarray([i.shape[:2] for i in images], np.int32).reshape(-1, 2),
        labels=np.zeros([len(files), c], np.float32),
        label_weights=np.ones([len(files), c], np.float32),
        gt_boxes=[empty] * len(files),
        gt_classes=[np.zeros([0], np.int32)] * len(files),
        gt_difficult=[np.zeros([0], bool)] * len(files),
        proposals=[b[:max_props] for b in boxes],
        proposal_scores=[np.zeros([len(b[:max_props])], np.float32) for b in boxes],
        has_scores=False,
        class_names=tuple(class_names),
        skipped=[],
    )


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """The images of one prediction: files read (in order), their arrays, and the skipped ones."""

    files: list[str]
    images: list[np.ndarray]
    skipped: list[tuple[str, str]]


def load(paths: Sequence[str]) -> ImageSet:
    """`list_images` then `read_images`; DataError when no image is left."""
    files, images, skipped = read_images(list_images(paths))
    if not files:
        raise DataError(
            f"no readable JPEG/PNG image in {list(paths)} ({len(skipped)} file(s) skipped)."
        )
    return ImageSet(files, images, skipped)
