"""Proposals for a folder of images, and conversion between proposal file formats.

    python -m jwsol.proposals --images DIR --out FILE [--method selective_search|grid] [--workers N]
    python -m jwsol.proposals convert IN OUT [--images DIR] [--mat-order yxyx|xyxy|auto] [--clip]

The first computes proposals for every image under DIR in worker processes with a progress bar,
saving partial results to FILE.partial.npz as it goes: a rerun skips the images already done
(in the partial file or in FILE). The second reads any of the formats of
`jwsol.data.proposals.formats` (.mat, .pkl, .npz) and writes another. Image ids are the paths
under DIR without extension ('000005' for DIR/000005.jpg). Installed as `jwsol-proposals`.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time

import numpy as np

from jwsol import errors
from jwsol.data import voc
from jwsol.data.proposals import formats, search
from jwsol.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Partial results are saved at least this often (seconds) and at the end or on an interruption.
SAVE_SECONDS = 30.0


def list_images(folder: str) -> list[tuple[str, str]]:
    """(id, path) of every image file under `folder`, sorted by id; id = path without extension,
    relative to the folder, '/'-separated. DataError for a missing folder, no images or an id
    shared by two files."""
    if not os.path.isdir(folder):
        raise DataError(f"--images {folder}: not a folder.")
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(root, name)
            image_id = os.path.relpath(os.path.join(root, stem), folder).replace(os.sep, "/")
            if image_id in found:
                raise DataError(
                    f"{path} and {found[image_id]}: two images with id {image_id!r}; rename one."
                )
            found[image_id] = path
    if not found:
        raise DataError(f"--images {folder}: no {'/'.join(IMAGE_EXTENSIONS)} files in it.")
    return sorted(found.items())


def image_sizes(folder: str) -> dict[str, tuple[int, int]]:
    """{id: (height, width)} of the images under `folder`, from their headers."""
    sizes = {}
    for image_id, path in list_images(folder):
        try:
            height, width, _ = voc.read_header(path, path)
        except DataError:
            continue  # unreadable files get no size, hence no inside-the-image check
        sizes[image_id] = (height, width)
    return sizes


def _propose_file(job) -> tuple[np.ndarray | None, tuple[int, int] | None, str]:
    """(boxes [P, 4], (height, width), '') of one image file, or (None, None, why) if unreadable."""
    path, settings = job
    try:
        image = search._decode(path)
    except DataError as e:
        return None, None, str(e)
    return search.propose(image, settings), tuple(image.shape[:2]), ""


def _resume(out: str, partial: str, settings: search.SearchSettings) -> formats.ProposalSet:
    """What earlier runs computed: the partial file's images, then those already in `out`."""
    done = formats.ProposalSet([], [], None, {})
    sources = [p for p in (partial, out) if os.path.exists(p)]
    for path in sources:
        if formats.format_of(path) == "npz":
            content = search.load_proposal_npz(path)
            if content["settings"] and content["settings"] != settings.key():
                raise DataError(
                    f"{path} was made with other proposal settings; rerun with the same "
                    "--method/--mode/--resize/--max-boxes, or delete it to start over."
                )
        loaded = formats.read(path)
        seen = set(done.ids)
        for k, image_id in enumerate(loaded.ids):
            if image_id not in seen:
                done.ids.append(image_id)
                done.boxes.append(loaded.boxes[k])
        done.sizes.update(loaded.sizes)
    return done


def precompute(
    images: str,
    out: str,
    settings: search.SearchSettings,
    *,
    workers: int = 0,
    save_seconds: float = SAVE_SECONDS,
) -> dict[str, int]:
    """Computes the proposals of every image under `images` into `out` (format by extension),
    resuming from `out + '.partial.npz'` and `out`. Returns counts: images, computed, resumed,
    unreadable (skipped, named on stderr)."""
    from tqdm import tqdm

    formats.format_of(out)  # a bad extension fails before any work
    items = list_images(images)
    partial = out + ".partial.npz"
    done = _resume(out, partial, settings)
    known = set(done.ids)
    todo = [(image_id, path) for image_id, path in items if image_id not in known]
    unreadable: list[str] = []
    last_save = time.monotonic()

    def save_partial() -> None:
        sizes = done.sizes if all(i in done.sizes for i in done.ids) else None
        search.save_boxes(partial, done.ids, done.boxes, None, sizes, settings.key())

    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"{settings.method}")
    try:
        for (image_id, path), (boxes, size, why) in zip(todo, _run(todo, settings, workers)):
            bar.update(1)
            if boxes is None:
                unreadable.append(f"{path} ({why})")
                continue
            done.ids.append(image_id)
            done.boxes.append(boxes)
            done.sizes[image_id] = size
            if time.monotonic() - last_save > save_seconds:
                save_partial()
                last_save = time.monotonic()
    except BaseException:
        save_partial()  # an interrupted run resumes from here
        raise
    finally:
        bar.close()
    order = {image_id: k for k, image_id in enumerate(done.ids)}
    ids = [image_id for image_id, _ in items if image_id in order]
    result = formats.ProposalSet(
        ids,
        [done.boxes[order[i]] for i in ids],
        None,
        {i: done.sizes[i] for i in ids if i in done.sizes},
    )
    formats.write(out, result)
    if os.path.exists(partial):
        os.remove(partial)
    for line in unreadable:
        print(f"skipped unreadable image: {line}", file=sys.stderr)
    return {
        "images": len(items),
        "computed": len(todo) - len(unreadable),
        "resumed": len(items) - len(todo),
        "unreadable": len(unreadable),
    }


def _run(todo, settings: search.SearchSettings, workers: int):
    """Yields `_propose_file` of each (id, path) in order, in `workers` spawned processes."""
    jobs = [(path, settings) for _, path in todo]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or settings.method == "grid" or len(jobs) < 2:
        search._init_worker()
        yield from map(_propose_file, jobs)
        return
    # NOTE: spawn, as `search.compute`: forking a process with library thread pools can hang.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=search._init_worker
    )
    # NOTE: futures, not pool.map: map cancels its futures when interrupted, and a pool broken by
    # terminated workers then fails to mark them (InvalidStateError in its thread).
    futures = [pool.submit(_propose_file, job) for job in jobs]
    finished = False
    try:
        for future in futures:
            yield future.result()
        finished = True
    finally:
        if not finished:  # interrupted (Ctrl-C): stop the workers; a wait here can hang
            for process in list(pool._processes.values()):  # NOTE: no public way to kill them
                process.terminate()
        pool.shutdown(wait=finished)


def convert(
    source: str,
    target: str,
    *,
    images: str | None = None,
    mat_order: str = "yxyx",
    clip: bool = False,
    int_ids: bool = False,
) -> formats.ProposalSet:
    """Reads `source` and writes `target` (formats by extension); sizes from `images` enable the
    inside-the-image check and 'auto' `.mat` order; `clip` clips and drops bad boxes instead of
    failing on them."""
    sizes = image_sizes(images) if images else {}
    proposals = formats.read(source, mat_order=mat_order, sizes=sizes, check=not clip)
    if clip:
        proposals = formats.clip(proposals)
    formats.write(target, proposals, int_ids=int_ids)
    return proposals


def _precompute_main(argv: list[str]) -> int:
    parser = errors.ArgumentParser(
        prog="jwsol-proposals", description=__doc__.split("\n\n")[0], epilog="Also: convert."
    )
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="output file: .npz, .pkl or .mat")
    parser.add_argument(
        "--method", default="selective_search", choices=["selective_search", "grid"]
    )
    parser.add_argument("--mode", default="fast", choices=["fast", "quality"])
    parser.add_argument("--resize", type=int, default=0, help="longer side for the search")
    parser.add_argument("--max-boxes", type=int, default=0, help="keep the first N (0: all)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    args = parser.parse_args(argv)
    settings = search.SearchSettings(
        method=args.method, mode=args.mode, resize=args.resize, max_boxes=args.max_boxes
    )

    def body() -> None:
        counts = precompute(args.images, args.out, settings, workers=args.workers)
        print(
            f"{args.out}: {counts['computed']} computed, {counts['resumed']} resumed, "
            f"{counts['unreadable']} unreadable of {counts['images']} images"
        )

    try:
        return errors.run_main(body, args.verbose)
    except KeyboardInterrupt:
        print(
            f"interrupted: the images done so far are in {args.out}.partial.npz; rerun the same "
            "command to resume",
            file=sys.stderr,
        )
        return 130  # the shell's status for SIGINT


def _convert_main(argv: list[str]) -> int:
    parser = errors.ArgumentParser(
        prog="jwsol-proposals convert", description="Converts a proposal file to another format."
    )
    parser.add_argument("source", help="input file: .mat, .pkl or .npz")
    parser.add_argument("target", help="output file: .mat, .pkl or .npz")
    parser.add_argument("--images", help="the images' folder: sizes for the checks")
    parser.add_argument("--mat-order", default="yxyx", choices=["yxyx", "xyxy", "auto"])
    parser.add_argument("--clip", action="store_true", help="clip to the image, drop empty boxes")
    parser.add_argument("--int-ids", action="store_true", help=".pkl: write ids as integers")
    args = parser.parse_args(argv)

    def body() -> None:
        result = convert(
            args.source,
            args.target,
            images=args.images,
            mat_order=args.mat_order,
            clip=args.clip,
            int_ids=args.int_ids,
        )
        total = sum(len(b) for b in result.boxes)
        print(f"{args.target}: {len(result.ids)} images, {total} boxes")

    return errors.run_main(body, args.verbose)


def main(argv: list[str] | None = None) -> int:
    """The command line (`jwsol-proposals`); `convert` as the first argument converts. Returns
    the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:
        return _convert_main(argv[1:])
    return _precompute_main(argv)


if __name__ == "__main__":
    sys.exit(main())
