"""Readers for ground truth (DAVIS PNG layout) and predictions (PNG folder or a run's Parquet).

Conventions follow the official DAVIS evaluation so scores are comparable:

- Palette PNGs hold object ids (0 = background, 1..N = objects, 255 = void).
- A non-palette PNG whose only values are 0 and 255 is the DAVIS-2016 binary
  format: 255 is object 1 (otherwise it would read as "all void").
- The objects of a sequence are 1..N with N the largest id in the first frame;
  ids that appear only later are not evaluated (as in DAVIS).
- Prediction PNGs are read for the ground truth's frame names (``<seq>/<frame>.png``).
- A run's ``masks`` rows map ``frame_idx`` to the position in the sorted list of
  ground-truth frames (DAVIS annotates every frame, so position == frame number).
"""

from __future__ import annotations

import io
import posixpath
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from pycocotools import mask as mask_utils

from fastsam2.davis_layout import annotation_roots
from fastsam2.eval.io import EvalError, display_name, read_run_table
from fastsam2.storage import canonical_uri, fs_and_path, join, parquet_files

VOID = 255
_PNG_THREADS = 4  # PIL releases the GIL while decoding; a few threads hide file latency.


def _decode_png(data: bytes) -> tuple[np.ndarray, bool]:
    """Decode a label PNG into a 2-D integer array; also say whether it was palette-indexed."""
    with Image.open(io.BytesIO(data)) as im:
        palette = im.mode == "P"
        if im.mode in ("RGB", "RGBA", "LA"):
            im = im.convert("L")
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise EvalError(f"unsupported PNG with shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr, palette


def _read_pngs(fs, paths: list[str]) -> tuple[np.ndarray, bool]:
    """Read a stack of same-sized label PNGs; returns (T, H, W) array and 'all palette'."""

    def load(path: str) -> tuple[np.ndarray, bool]:
        try:
            with fs.open(path, "rb") as fh:
                return _decode_png(fh.read())
        except FileNotFoundError:
            raise EvalError(f"missing file {path}") from None
        except (OSError, ValueError) as exc:
            raise EvalError(f"cannot read {path}: {exc}") from None

    with ThreadPoolExecutor(_PNG_THREADS) as ex:
        decoded = list(ex.map(load, paths))
    shapes = {a.shape for a, _ in decoded}
    if len(shapes) != 1:
        raise EvalError(f"frames of {posixpath.dirname(paths[0])} differ in size: {sorted(shapes)}")
    stack = np.stack([a for a, _ in decoded])
    return stack, all(p for _, p in decoded)


def _binary_255(stack: np.ndarray, palette: bool) -> bool:
    """The DAVIS-2016 0/255 format: non-palette images containing only 0 and 255."""
    if palette or stack.max(initial=0) != 255:
        return False
    return not np.any((stack != 0) & (stack != 255))


@dataclass
class GroundTruth:
    """One annotated sequence: labels with void removed, the void mask, object count."""

    sequence: str
    frames: list[str]  # frame names without extension, sorted
    labels: np.ndarray  # (T, H, W) object ids, void pixels set to 0
    void: np.ndarray  # (T, H, W) bool
    num_objects: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape[1:]


class GroundTruthSet:
    """A DAVIS annotation root: ``ROOT/Annotations/480p/<seq>/<frame>.png``.

    Also accepts ``ROOT/Annotations/<seq>`` or a folder of ``<seq>/`` folders, so a
    path straight to ``Annotations/480p`` works too.
    """

    def __init__(self, root: str, storage_options: dict | None = None):
        self.uri = str(root)
        self.fs, base = fs_and_path(root, storage_options)
        if not self.fs.isdir(base):
            raise EvalError(f"ground truth folder not found: {root}")
        for candidate in annotation_roots(base):
            if self.fs.isdir(candidate) and self._scan(candidate):
                self.path = candidate
                break
        else:
            raise EvalError(f"no DAVIS annotations under {root} (expected Annotations/480p/<sequence>/*.png)")
        self.files: dict[str, list[str]] = self._scan(self.path)

    def _scan(self, path: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for entry in self.fs.ls(path, detail=True):
            if entry["type"] != "directory":
                continue
            name = posixpath.basename(entry["name"].rstrip("/"))
            pngs = sorted(p for p in self.fs.ls(entry["name"], detail=False) if p.lower().endswith(".png"))
            if pngs:
                out[name] = pngs
        return dict(sorted(out.items()))

    @property
    def sequences(self) -> list[str]:
        return list(self.files)

    def frames(self, sequence: str) -> list[str]:
        return [posixpath.splitext(posixpath.basename(p))[0] for p in self.files[sequence]]

    def read(self, sequence: str) -> GroundTruth:
        if sequence not in self.files:
            raise EvalError(f"sequence {sequence!r} not in ground truth {self.uri}")
        stack, palette = _read_pngs(self.fs, self.files[sequence])
        if _binary_255(stack, palette):
            labels = (stack == 255).astype(np.uint8)
            void = np.zeros(stack.shape, dtype=bool)
        else:
            void = stack == VOID
            labels = np.where(void, 0, stack)
        # DAVIS: the objects are 1..max id of the first frame.
        num_objects = int(labels[0].max(initial=0))
        return GroundTruth(sequence, self.frames(sequence), labels, void, num_objects)


@dataclass
class PredictedSequence:
    """Predicted masks of one sequence, restricted to the frames being scored."""

    num_objects: int  # largest object id present
    _labels: np.ndarray | None = None  # (T, H, W) label map (PNG predictions)
    _masks: dict[int, np.ndarray] = field(default_factory=dict)  # obj_id -> (T, H, W) (run masks)
    shape: tuple[int, int, int] = (0, 0, 0)
    missing: int = 0  # (object, frame) pairs absent from the predictions, scored as empty

    def mask(self, obj_id: int) -> np.ndarray:
        """Binary mask stack of one object; an object never predicted is all empty."""
        if self._labels is not None:
            return self._labels == obj_id
        m = self._masks.get(obj_id)
        return m if m is not None else np.zeros(self.shape, dtype=bool)


class PngPredictions:
    """A DAVIS-style results folder: ``SOURCE/<seq>/<frame>.png`` label maps."""

    kind = "png"

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = str(uri)
        self.key = canonical_uri(uri)
        self.label = display_name(uri)
        self.fs, self.path = fs_and_path(uri, storage_options)
        if not self.fs.isdir(self.path):
            raise EvalError(f"prediction folder not found: {uri}")

    def sequences(self) -> set[str]:
        return {
            posixpath.basename(e["name"].rstrip("/"))
            for e in self.fs.ls(self.path, detail=True)
            if e["type"] == "directory"
        }

    def load(self, gt: GroundTruth, positions: np.ndarray) -> PredictedSequence:
        if len(positions) == 0:  # sequences of < 3 frames have nothing to score
            empty = np.zeros((0, *gt.shape), np.uint8)
            return PredictedSequence(num_objects=0, _labels=empty, shape=empty.shape)
        names = [gt.frames[i] for i in positions]
        paths = [join(self.path, gt.sequence, f"{n}.png") for n in names]
        stack, palette = _read_pngs(self.fs, paths)
        if stack.shape[1:] != gt.shape:
            raise EvalError(
                f"{self.label}: {gt.sequence} predictions are {stack.shape[2]}x{stack.shape[1]}, "
                f"ground truth is {gt.shape[1]}x{gt.shape[0]}"
            )
        if _binary_255(stack, palette):
            stack = (stack == 255).astype(np.uint8)
        return PredictedSequence(num_objects=int(stack.max(initial=0)), _labels=stack, shape=stack.shape)


class RunPredictions:
    """A run's output root: masks as COCO RLE rows in ``masks/*.parquet`` (local or s3://)."""

    kind = "run"
    COLUMNS = ["video_id", "obj_id", "frame_idx", "height", "width", "rle"]

    def __init__(self, uri: str, sequences: Iterable[str] | None = None, storage_options: dict | None = None):
        self.uri = str(uri)
        self.key = canonical_uri(uri)
        self.label = display_name(uri)
        wanted = None if sequences is None else pa.array(sorted(set(sequences)), pa.string())
        keep = None if wanted is None else (lambda t: t.filter(pc.is_in(t["video_id"], value_set=wanted)))
        table = read_run_table(uri, "masks", columns=self.COLUMNS, row_filter=keep, storage_options=storage_options)
        if table is None:
            raise EvalError(f"no masks/*.parquet under {uri}")
        self.table = table
        ids = self.table["video_id"].combine_chunks()
        self._by_video: dict[str, pa.Table] = {}
        for vid in pc.unique(ids).to_pylist():
            self._by_video[vid] = self.table.filter(pc.equal(ids, vid))

    def sequences(self) -> set[str]:
        return set(self._by_video)

    def load(self, gt: GroundTruth, positions: np.ndarray) -> PredictedSequence:
        t_count = len(positions)
        h, w = gt.shape
        rows = self._by_video.get(gt.sequence)
        pos_of = {int(p): i for i, p in enumerate(positions)}
        masks: dict[int, np.ndarray] = {}
        if rows is None or rows.num_rows == 0:
            return PredictedSequence(0, None, masks, (t_count, h, w), missing=gt.num_objects * t_count)
        cols = rows.to_pydict()
        sizes = set(zip(cols["height"], cols["width"]))
        if sizes != {(h, w)}:
            got = ", ".join(f"{ww}x{hh}" for hh, ww in sorted(sizes))
            raise EvalError(f"{self.label}: {gt.sequence} masks are {got}, ground truth is {w}x{h}")
        by_obj: dict[int, tuple[list[int], list[dict]]] = {}
        for obj, fidx, rle in zip(cols["obj_id"], cols["frame_idx"], cols["rle"]):
            slot = pos_of.get(int(fidx))
            if slot is None:
                continue  # first/last frame or beyond the annotated frames
            idx, rles = by_obj.setdefault(int(obj), ([], []))
            idx.append(slot)
            rles.append({"size": [h, w], "counts": rle.encode() if isinstance(rle, str) else rle})
        present = 0
        for obj, (idx, rles) in by_obj.items():
            stack = np.zeros((t_count, h, w), dtype=bool)
            with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation noise
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = mask_utils.decode(rles)  # (H, W, n), Fortran order
            stack[np.asarray(idx)] = np.moveaxis(decoded, -1, 0).astype(bool)
            masks[obj] = stack
            present += len(set(idx))
        num_objects = max(masks, default=0)
        missing = max(gt.num_objects, num_objects) * t_count - present
        return PredictedSequence(num_objects, None, masks, (t_count, h, w), missing=missing)


def open_predictions(uri: str, sequences: Iterable[str] | None = None,
                     storage_options: dict | None = None) -> PngPredictions | RunPredictions:
    """A run root (has ``masks/`` Parquet) or a DAVIS-style PNG folder.

    ``sequences`` limits what is read from a run's masks to the sequences scored.
    """
    fs, path = fs_and_path(uri, storage_options)
    if not fs.exists(path):
        raise EvalError(f"predictions not found: {uri}")
    if parquet_files(fs, join(path, "masks")):
        return RunPredictions(uri, sequences, storage_options)
    if fs.isdir(path):
        return PngPredictions(uri, storage_options)
    raise EvalError(f"{uri} is neither a run output (masks/*.parquet) nor a folder of <sequence>/ PNGs")
