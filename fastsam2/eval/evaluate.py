"""Semi-supervised DAVIS evaluation of one or more prediction sources against one ground truth.

Protocol (the official davis2017-evaluation, semi-supervised task):

- objects 1..N from the first ground-truth frame; each is scored on its own;
- the first and last frames are dropped (the first is given as the prompt);
- J and F per object and frame, then Mean / Recall / Decay per object;
- global values are means over *all objects of all sequences* (not over
  sequences), and J&F-Mean = (J-Mean + F-Mean) / 2;
- void pixels (255) become background and are not excluded, exactly as the
  official semi-supervised evaluation does (it passes no void mask).
  ``void="ignore"`` excludes them from J and F instead (the metric functions'
  void handling, used by the official unsupervised task).

Ground truth is read once per sequence and shared by every prediction source,
so ``--pred A --pred B`` costs little more than one evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fastsam2.eval import metrics
from fastsam2.eval.io import EvalError, unique_labels
from fastsam2.eval.readers import GroundTruth, GroundTruthSet, PngPredictions, RunPredictions, open_predictions
from fastsam2.storage import canonical_uri, write_parquet_atomic

MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

#: Schema of the per-object per-frame scores written by ``--out``.
SCORES_SCHEMA = pa.schema(
    [
        ("pred", pa.string()),  # normalised URI of the prediction source (run root or PNG folder)
        ("pred_label", pa.string()),
        ("gt", pa.string()),
        ("sequence", pa.string()),  # == video_id of a run
        ("obj_id", pa.int32()),
        ("frame_idx", pa.int32()),  # position in the sorted ground-truth frames
        ("frame", pa.string()),
        ("J", pa.float64()),
        ("F", pa.float64()),
    ]
)


@dataclass
class ObjectScores:
    """Per-frame J and F of one object, and its statistics."""

    obj_id: int
    frame_idx: np.ndarray
    j: np.ndarray
    f: np.ndarray
    legacy_uint8: bool = False

    @property
    def stats(self) -> dict[str, float]:
        jm, jr, jd = metrics.db_statistics(self.j, self.legacy_uint8)
        fm, fr, fd = metrics.db_statistics(self.f, self.legacy_uint8)
        return {
            "J&F-Mean": (jm + fm) / 2,
            "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
            "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
        }  # fmt: skip


@dataclass
class SequenceScores:
    name: str
    frames: list[str]
    objects: list[ObjectScores]


def _aggregate(objects: Sequence[ObjectScores]) -> dict[str, float]:
    """Means over objects, as DAVIS computes its global row (np.mean, so NaN propagates)."""
    if not objects:
        return {m: math.nan for m in MEASURES}
    rows = [o.stats for o in objects]
    out = {m: float(np.mean([r[m] for r in rows])) for m in MEASURES if m != "J&F-Mean"}
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    return {m: out[m] for m in MEASURES}


@dataclass
class EvalResult:
    """Scores of one prediction source."""

    pred: str  # normalised URI
    label: str
    gt: str
    sequences: dict[str, SequenceScores] = field(default_factory=dict)
    missing_sequences: list[str] = field(default_factory=list)
    missing_masks: int = 0  # (object, frame) pairs absent from a run's masks, scored as empty
    protocol: dict = field(default_factory=dict)

    @property
    def objects(self) -> list[ObjectScores]:
        return [o for s in self.sequences.values() for o in s.objects]

    def global_metrics(self) -> dict[str, float]:
        return _aggregate(self.objects)

    def sequence_metrics(self, name: str) -> dict[str, float]:
        return _aggregate(self.sequences[name].objects)

    def to_json(self) -> dict:
        """The ``--json`` document: global measures, then per sequence (and per object)."""
        doc: dict = {m: _finite(v) for m, v in self.global_metrics().items()}
        doc["sequences"] = {
            name: {
                **{m: _finite(v) for m, v in self.sequence_metrics(name).items()},
                "num_objects": len(seq.objects),
                "num_frames_scored": len(seq.frames),
                "objects": {str(o.obj_id): {m: _finite(v) for m, v in o.stats.items()} for o in seq.objects},
            }
            for name, seq in self.sequences.items()
        }
        doc["pred"] = self.pred
        doc["gt"] = self.gt
        doc["num_objects"] = len(self.objects)
        doc["missing_sequences"] = list(self.missing_sequences)
        doc["missing_masks"] = self.missing_masks
        doc["protocol"] = dict(self.protocol)
        return doc

    def scores_table(self) -> pa.Table:
        """Per-object per-frame scores (the ``--out`` Parquet)."""
        cols: dict[str, list] = {name: [] for name in SCORES_SCHEMA.names}
        for seq in self.sequences.values():
            for o in seq.objects:
                n = len(o.frame_idx)
                cols["pred"] += [self.pred] * n
                cols["pred_label"] += [self.label] * n
                cols["gt"] += [self.gt] * n
                cols["sequence"] += [seq.name] * n
                cols["obj_id"] += [o.obj_id] * n
                cols["frame_idx"] += [int(i) for i in o.frame_idx]
                cols["frame"] += list(seq.frames)
                cols["J"] += [float(v) for v in o.j]
                cols["F"] += [float(v) for v in o.f]
        return pa.Table.from_pydict(cols, schema=SCORES_SCHEMA)


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def score_sequence(
    gt: GroundTruth,
    pred_masks: Callable[[int], np.ndarray],
    positions: np.ndarray,
    bound_th: float = metrics.BOUND_TH,
    void: str = "background",
    legacy_uint8: bool = False,
) -> list[ObjectScores]:
    """J and F of every ground-truth object over the scored frames ``positions``."""
    labels = gt.labels[positions]
    void_mask = gt.void[positions] if void == "ignore" else None
    out = []
    for obj in range(1, gt.num_objects + 1):
        g = labels == obj
        p = pred_masks(obj)
        fs = metrics.frame_scores(g, p, void_mask, bound_th)
        out.append(ObjectScores(obj, positions.copy(), fs.j, fs.boundary.f, legacy_uint8))
    return out


def _select_sequences(gt: GroundTruthSet, sequences: Sequence[str] | None) -> list[str]:
    if not sequences:
        return gt.sequences
    unknown = [s for s in sequences if s not in gt.files]
    if unknown:
        raise EvalError(f"sequences not in the ground truth: {', '.join(unknown)}")
    return list(sequences)


def evaluate(
    gt_root: str,
    preds: Sequence[str],
    sequences: Sequence[str] | None = None,
    bound_th: float = metrics.BOUND_TH,
    void: str = "background",
    strict: bool = False,
    legacy_uint8: bool = False,
    progress: Callable[[str], None] | None = None,
    storage_options: dict | None = None,
) -> list[EvalResult]:
    """Evaluate each prediction source (run root or PNG folder) against ``gt_root``.

    ``storage_options`` (as ``--storage-options``) reach every ``s3://`` read.

    Sequences absent from a source are listed in ``missing_sequences`` and left
    out of its scores (an error with ``strict``), so a run over a subset of a
    dataset can still be scored; the CLI prints them.
    """
    if void not in ("background", "ignore"):
        raise EvalError(f"void must be 'background' or 'ignore', not {void!r}")
    if not preds:
        raise EvalError("no predictions given")
    gts = GroundTruthSet(gt_root, storage_options)
    names = _select_sequences(gts, sequences)
    sources: list[PngPredictions | RunPredictions] = [open_predictions(p, names, storage_options) for p in preds]
    labels = unique_labels([s.uri for s in sources])
    protocol = {
        "task": "semi-supervised",
        "bound_th": bound_th,
        "void": void,
        "first_last_frames_dropped": True,
        "decay_bins": "uint8-legacy" if legacy_uint8 else "exact",
    }
    results = [
        EvalResult(pred=s.key, label=lab, gt=canonical_uri(gt_root), protocol=protocol)
        for s, lab in zip(sources, labels)
    ]
    available = [s.sequences() for s in sources]
    for res, avail in zip(results, available):
        res.missing_sequences = [n for n in names if n not in avail]
        if strict and res.missing_sequences:
            raise EvalError(f"{res.label}: no predictions for {', '.join(res.missing_sequences)}")
    todo = [n for n in names if any(n in a for a in available)]
    if not todo:
        raise EvalError("no ground-truth sequence has predictions (check --gt/--pred and sequence names)")

    def load(name: str) -> tuple[GroundTruth, np.ndarray, list]:
        gt = gts.read(name)
        positions = np.arange(1, len(gt.frames) - 1)  # first and last frames are not scored
        loaded = [src.load(gt, positions) if name in avail else None for src, avail in zip(sources, available)]
        return gt, positions, loaded

    # Decode the next sequence (PNG/RLE) in a thread while scoring the current one.
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, todo[0])
        for i, name in enumerate(todo):
            gt, positions, loaded = pending.result()
            if i + 1 < len(todo):
                pending = pool.submit(load, todo[i + 1])
            for res, ps in zip(results, loaded):
                if ps is None:
                    continue
                if ps.num_objects > gt.num_objects:
                    raise EvalError(
                        f"{res.label}: {name} has object id {ps.num_objects} but the ground truth "
                        f"has {gt.num_objects} object(s)"
                    )
                res.missing_masks += ps.missing
                objs = score_sequence(gt, ps.mask, positions, bound_th, void, legacy_uint8)
                res.sequences[name] = SequenceScores(name, [gt.frames[k] for k in positions], objs)
            if progress:
                progress(name)
    return results


def differences(base: EvalResult, other: EvalResult) -> dict:
    """``other - base`` for the global measures and every sequence both scored."""
    g0, g1 = base.global_metrics(), other.global_metrics()
    doc: dict = {m: _finite(g1[m] - g0[m]) for m in MEASURES}
    common = [s for s in base.sequences if s in other.sequences]
    doc["sequences"] = {
        s: {m: _finite(other.sequence_metrics(s)[m] - base.sequence_metrics(s)[m]) for m in MEASURES} for s in common
    }
    return doc


def results_json(results: Sequence[EvalResult]) -> dict:
    """One source: the DAVIS-style document. Several: each, plus differences to the first."""
    if len(results) == 1:
        return results[0].to_json()
    return {
        "predictions": {r.label: r.to_json() for r in results},
        "baseline": results[0].label,
        "differences": {r.label: differences(results[0], r) for r in results[1:]},
    }


def write_scores(results: Sequence[EvalResult], uri: str, storage_options: dict | None = None) -> str:
    """Write per-object per-frame scores of all sources to one Parquet file.

    A URI ending in ``.parquet`` is the file; anything else is a folder that
    receives ``scores.parquet`` (e.g. ``RUN/eval`` so ``report`` finds it).
    """
    table = pa.concat_tables([r.scores_table() for r in results])
    target = uri if uri.endswith(".parquet") else uri.rstrip("/") + "/scores.parquet"
    write_parquet_atomic(table, target, storage_options)
    return target
