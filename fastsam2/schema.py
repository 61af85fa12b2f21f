"""The Arrow schemas of every table a run writes, in one place.

A run's output root holds one folder per table, each with one Parquet file per
video (``<table>/<video_id>.parquet``, the id made safe by :mod:`fastsam2.video_ids`),
written atomically, plus the run settings file (:mod:`fastsam2.run_settings`):

- ``masks/``  one row per (video, object, frame): COCO RLE and box.
- ``frames/`` one row per frame: per-component timings, tokens kept, memory.
- ``objects/`` one row per (video, object): where it starts, its prompt and where
  that came from (user / auto / text), its caption and phrase.
- ``videos/`` one row per finished video: prompts, model, efficiency stats.
  Written last, so its presence marks the video as done.
- ``errors/`` one row per failed video.

Readers (``eval``, ``report``, DuckDB) glob ``<root>/<table>/*.parquet``.
"""

from __future__ import annotations

import pyarrow as pa

TABLES = ("masks", "frames", "objects", "videos", "errors")

MASKS = pa.schema(
    [
        ("video_id", pa.string()),
        ("obj_id", pa.int32()),
        ("frame_idx", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        # COCO RLE counts as pycocotools writes them (column-major, compressed string).
        ("rle", pa.string()),
        ("area", pa.int64()),
        # x0, y0, x1, y1 in pixels (exclusive x1/y1); all zero for an empty mask.
        ("bbox", pa.list_(pa.float32(), 4)),
        # Mean foreground probability inside the mask; 0 when empty.
        ("score", pa.float32()),
    ]
)

#: Per-component wall time of one frame, in milliseconds.
COMPONENTS = ("image_encoder", "router", "memory_attention", "decoder", "memory_encoder")

FRAMES = pa.schema(
    [
        ("video_id", pa.string()),
        ("frame_idx", pa.int32()),
        ("ms_total", pa.float32()),
        *[(f"ms_{c}", pa.float32()) for c in COMPONENTS],
        ("tokens_kept", pa.int32()),
        ("tokens_total", pa.int32()),
        # Bytes held by the memory bank after this frame (all objects).
        ("memory_bank_bytes", pa.int64()),
        # CUDA peak allocated on GPU, process RSS on CPU.
        ("memory_bytes", pa.int64()),
        # Image-encoder runs on this frame; 1 however many objects share the features.
        ("encoder_calls", pa.int32()),
    ]
)

OBJECTS = pa.schema(
    [
        ("video_id", pa.string()),
        ("obj_id", pa.int32()),
        # First frame the object has masks on (its prompt frame; earlier with --bidirectional).
        ("first_frame_idx", pa.int32()),
        ("prompt_frame_idx", pa.int32()),
        ("box", pa.list_(pa.float32())),  # x0, y0, x1, y1 of the prompt box
        ("point", pa.list_(pa.float32())),  # x, y of the click
        ("objectness", pa.float32()),  # RPN objectness of an auto box
        ("caption", pa.string()),
        ("phrase", pa.string()),  # <= 6 words; the object's router text
        ("clip_score", pa.float32()),  # CLIP region-text similarity when a phrase selected it
        ("prompt_source", pa.string()),  # "user" | "auto" | "text"
        ("caption_backend", pa.string()),
        ("caption_model", pa.string()),
        ("detector_model", pa.string()),
        ("model", pa.string()),  # SAM2 config that tracked it
        ("random_weights", pa.bool_()),
        ("run_id", pa.string()),
    ]
)

VIDEOS = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        # The user's own id (manifest video_id) when it was not a safe file name and was changed.
        ("source_id", pa.string()),
        ("status", pa.string()),
        ("num_frames", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("num_objects", pa.int32()),  # objects tracked (= rows in objects/), late ones included
        # Prompt: where it came from and what it was.
        ("prompt_source", pa.string()),  # "user" | "auto"
        ("point", pa.list_(pa.float32())),  # x, y of the first object's click
        ("box", pa.list_(pa.float32())),  # x0, y0, x1, y1 of the first object's box
        ("prompt_frame_idx", pa.int32()),
        ("text", pa.string()),
        ("caption", pa.string()),
        ("objectness", pa.float32()),
        ("caption_backend", pa.string()),
        ("caption_model", pa.string()),
        # Model and config.
        ("model", pa.string()),
        ("checkpoint", pa.string()),
        ("random_weights", pa.bool_()),
        ("keep_ratio", pa.float32()),
        ("image_size", pa.int32()),
        ("device", pa.string()),
        # Efficiency.
        ("fps", pa.float32()),
        ("ms_per_frame", pa.float32()),
        *[(f"ms_{c}", pa.float32()) for c in COMPONENTS],
        ("peak_memory_bytes", pa.int64()),
        ("memory_bank_bytes", pa.int64()),  # peak over the video
        ("memory_bank_bytes_per_frame", pa.float32()),
        ("tokens_kept", pa.float32()),  # mean fraction of tokens kept
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)

ERRORS = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("source_id", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("run_id", pa.string()),
        ("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "masks": MASKS,
    "frames": FRAMES,
    "objects": OBJECTS,
    "videos": VIDEOS,
    "errors": ERRORS,
}


def table_from_rows(table: str, rows: list[dict]) -> pa.Table:
    """Build a table of the named schema from dict rows; missing keys become null."""
    schema = SCHEMAS[table]
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)
