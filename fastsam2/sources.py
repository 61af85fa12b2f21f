"""Inputs -> one task per video, and streaming frame readers.

An INPUT can be a video file, a folder of frames, a folder/prefix holding many
videos (files or frame subfolders, DAVIS ``JPEGImages/480p/<seq>/`` included), a
glob, or a manifest (.csv, .jsonl, .parquet with a ``uri`` column and optional
``video_id``, ``obj_id``, ``point``, ``box``, ``text`` columns). Local paths and
``s3://`` URIs alike.

Frames are decoded one at a time: a reader never holds a whole video.
"""

from __future__ import annotations

import glob as globmod
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from fastsam2.config import ObjectPrompt, VideoTask
from fastsam2.davis_layout import image_roots
from fastsam2.storage import filesystem_for, is_remote, normalize_uri, strip_protocol
from fastsam2.video_ids import assign_ids, safe_id

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FRAME_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MANIFEST_EXTS = (".csv", ".jsonl", ".parquet")


class InputError(ValueError):
    """An INPUT that names nothing we can read."""


def name_for(uri: str) -> str:
    """What a video is called by its location: the file stem or the folder name (unsanitised)."""
    name = os.path.basename(uri.rstrip("/"))
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in VIDEO_EXTS else name


def video_id_for(uri: str) -> str:
    """The filename-safe id of one video on its own (see :mod:`fastsam2.video_ids`)."""
    return safe_id(name_for(uri))


def _with_protocol(uri: str, path: str) -> str:
    return f"{uri.split('://', 1)[0]}://{path}" if is_remote(uri) else path


def _frames_in(fs, path: str) -> list[str]:
    try:
        names = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n.lower().endswith(FRAME_EXTS))


def _tasks_in_folder(fs, uri: str) -> list[VideoTask]:
    """A folder is one video (it holds frames) or many (video files / frame subfolders)."""
    path = strip_protocol(uri).rstrip("/")
    for sub in image_roots(path):  # a DAVIS root: one video per sequence folder
        if fs.isdir(sub) and not _frames_in(fs, sub):
            return _tasks_in_folder(fs, _with_protocol(uri, sub))
    if _frames_in(fs, path):
        return [VideoTask(video_id=video_id_for(path), uri=_with_protocol(uri, path), kind="frames")]
    tasks: list[VideoTask] = []
    for entry in sorted(fs.ls(path, detail=True), key=lambda e: e["name"]):
        name = entry["name"].rstrip("/")
        if entry["type"] == "directory":
            if _frames_in(fs, name):
                tasks.append(VideoTask(video_id=video_id_for(name), uri=_with_protocol(uri, name), kind="frames"))
        elif name.lower().endswith(VIDEO_EXTS):
            tasks.append(VideoTask(video_id=video_id_for(name), uri=_with_protocol(uri, name), kind="file"))
    return tasks


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


def _parse_xy(value: Any, n: int, where: str) -> list[float] | None:
    """A point/box cell: ``"x,y"``, ``"[x, y]"`` or a list; a named error otherwise."""
    if _blank(value):
        return None
    try:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        out = [float(v) for v in value]
        if not all(np.isfinite(out)):
            raise ValueError("not finite")
    except (ValueError, TypeError):
        out = None
    if out is None or len(out) != n:
        raise InputError(f"{where}: expected {n} comma-separated numbers, got {str(value)[:80]!r}")
    return out


def _parse_obj_id(value: Any, default: int, where: str) -> int:
    if _blank(value):
        return default
    try:
        f = float(value)
        if f != int(f) or f < 0:
            raise ValueError
        return int(f)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where}: expected a whole number >= 0, got {str(value)[:80]!r}") from None


def _read_manifest(uri: str, storage_options: dict | None) -> list[VideoTask]:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri)
    if fs.size(path) == 0:
        raise InputError(f"manifest {uri}: empty file (0 bytes)")
    with fs.open(path, "rb") as f:
        if path.lower().endswith(".csv"):
            table = pcsv.read_csv(f)
        elif path.lower().endswith(".jsonl"):
            table = pjson.read_json(f)
        else:
            table = pq.read_table(f)
    if "uri" not in table.column_names:
        raise InputError(f"manifest {uri} has no 'uri' column (columns: {table.column_names})")
    base = os.path.dirname(uri)
    grouped: dict[str, VideoTask] = {}
    for i, row in enumerate(table.to_pylist(), start=1):
        where = f"manifest {uri} row {i}"  # data rows, 1-based (the header is not counted)
        if _blank(row["uri"]):
            raise InputError(f"{where}, column 'uri': empty")
        video_uri = normalize_uri(str(row["uri"]))
        if not is_remote(video_uri) and not os.path.isabs(video_uri):
            video_uri = f"{base}/{video_uri}" if is_remote(base) else os.path.join(base, video_uri)
        kind = "file" if video_uri.lower().endswith(VIDEO_EXTS) else "frames"
        own_id = None if _blank(row.get("video_id")) else str(row["video_id"])
        task = grouped.setdefault(video_uri, VideoTask(video_id=safe_id(own_id or name_for(video_uri)),
                                                       uri=video_uri, kind=kind, source_id=own_id))
        point = _parse_xy(row.get("point"), 2, f"{where}, column 'point'")
        box = _parse_xy(row.get("box"), 4, f"{where}, column 'box'")
        if row.get("text"):
            task.text = str(row["text"])
        if point or box:
            obj_id = _parse_obj_id(row.get("obj_id"), len(task.objects) + 1, f"{where}, column 'obj_id'")
            task.objects.append(ObjectPrompt(obj_id=obj_id, point=point, box=box))
    return list(grouped.values())


def discover(inputs: list[str], storage_options: dict | None = None,
             recorded: dict[str, str] | None = None) -> list[VideoTask]:
    """Expand every INPUT into video tasks (deduplicated by URI, in input order).

    Ids are made unique over the whole set by :func:`fastsam2.video_ids.assign_ids`;
    ``recorded`` (``{uri: id}`` already under the output root) pins those inputs' ids.
    An INPUT that names nothing raises :class:`InputError`; a video that exists
    but cannot be decoded is found later, per video, and becomes an error row.
    """
    tasks: list[VideoTask] = []
    for uri in map(normalize_uri, inputs):
        if not is_remote(uri):  # one spelling per local video, so a resume from elsewhere finds it done
            uri = os.path.abspath(uri)
        try:
            tasks.extend(_discover_one(uri, storage_options))
        except InputError:
            raise
        except (OSError, ValueError, ImportError) as exc:  # unknown scheme, credentials, permissions
            if strip_protocol(uri).lower().endswith(VIDEO_EXTS):
                # One video we cannot reach: its own errors/ row later, not a dead job.
                tasks.append(VideoTask(video_id=video_id_for(uri), uri=uri, kind="file"))
            else:
                raise InputError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
    return _unique(tasks, recorded)


def _discover_one(uri: str, storage_options: dict | None) -> list[VideoTask]:
    """Tasks of one INPUT (glob, manifest, folder/prefix, or a single video)."""
    tasks: list[VideoTask] = []
    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri)
    if any(ch in path for ch in "*?["):
        matches = sorted(fs.glob(path)) if is_remote(uri) else sorted(globmod.glob(path))
        if not matches:
            raise InputError(f"glob {uri} matches nothing")
        for m in matches:
            m_uri = _with_protocol(uri, m)
            if fs.isdir(m):
                tasks.extend(_tasks_in_folder(fs, m_uri))
            elif m.lower().endswith(VIDEO_EXTS):
                tasks.append(VideoTask(video_id=video_id_for(m), uri=m_uri, kind="file"))
        return tasks
    if path.lower().endswith(MANIFEST_EXTS):
        if not fs.exists(path):
            raise InputError(f"manifest not found: {uri}")
        tasks.extend(_read_manifest(uri, storage_options))
    elif fs.isdir(path):
        found = _tasks_in_folder(fs, uri)
        if not found:
            raise InputError(f"no videos or frames found in {uri}")
        tasks.extend(found)
    else:
        # A single video file. A missing one is reported per video, not fatal:
        # a dataset run should not die for one bad entry.
        tasks.append(VideoTask(video_id=video_id_for(path), uri=uri, kind="file"))
    return tasks


def _unique(tasks: list[VideoTask], recorded: dict[str, str] | None = None) -> list[VideoTask]:
    """Drop repeated URIs; give every task its final, unique id.

    The user's own manifest id is kept in ``source_id`` only when the id had to change.
    """
    first: dict[str, VideoTask] = {}
    for t in tasks:
        first.setdefault(t.uri, t)
    unique = list(first.values())
    ids = assign_ids({t.uri: t.source_id or name_for(t.uri) for t in unique}, recorded)
    for t in unique:
        t.video_id = ids[t.uri]
        if t.source_id == t.video_id:
            t.source_id = None
    return unique


# --------------------------------------------------------------------------- readers


@dataclass
class VideoInfo:
    num_frames: int
    height: int
    width: int


class VideoReadError(RuntimeError):
    """The video exists but cannot be decoded (corrupt, empty, unsupported)."""


class FrameReader:
    """Streams RGB uint8 frames (H x W x 3) of one video, in order."""

    def __init__(self, task: VideoTask, storage_options: dict | None = None, max_frames: int | None = None):
        self.task = task
        self.storage_options = storage_options
        self.max_frames = max_frames
        self.fs = filesystem_for(task.uri, storage_options)
        self.info = self._probe()
        if self.info.num_frames == 0:
            raise VideoReadError(f"{task.uri} has no frames")

    # -- frame folders
    def _frame_paths(self) -> list[str]:
        paths = _frames_in(self.fs, strip_protocol(self.task.uri))
        return paths[: self.max_frames] if self.max_frames else paths

    def _read_image(self, path: str) -> np.ndarray:
        from PIL import Image

        with self.fs.open(path, "rb") as f:
            return np.asarray(Image.open(f).convert("RGB"))

    # -- video files
    def _open_container(self):
        import av

        path = strip_protocol(self.task.uri)
        if not self.fs.exists(path):
            raise FileNotFoundError(f"video not found: {self.task.uri}")
        if self.fs.size(path) == 0:
            raise VideoReadError(f"{self.task.uri}: empty file (0 bytes)")
        handle = self.fs.open(path, "rb")
        try:
            return av.open(handle), handle
        except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad data
            handle.close()
            raise VideoReadError(f"cannot decode {self.task.uri}: {exc}") from exc

    def _probe(self) -> VideoInfo:
        if self.task.kind == "frames":
            paths = self._frame_paths()
            if not paths:
                return VideoInfo(0, 0, 0)
            h, w = self._read_image(paths[0]).shape[:2]
            return VideoInfo(len(paths), h, w)
        container, handle = self._open_container()
        try:
            if not container.streams.video:
                raise VideoReadError(f"{self.task.uri} has no video stream")
            stream = container.streams.video[0]
            n = stream.frames
            if not n:  # not in the header: count packets (no decoding)
                n = sum(1 for p in container.demux(stream) if p.size)
            h, w = stream.codec_context.height, stream.codec_context.width
        finally:
            container.close()
            handle.close()
        if self.max_frames:
            n = min(n, self.max_frames)
        return VideoInfo(int(n), int(h), int(w))

    def __iter__(self) -> Iterator[np.ndarray]:
        n = self.info.num_frames
        if self.task.kind == "frames":
            for path in self._frame_paths()[:n]:
                image = self._read_image(path)
                if image.shape[:2] != (self.info.height, self.info.width):
                    raise VideoReadError(
                        f"{self.task.uri}: frame {os.path.basename(path)} is {image.shape[1]}x{image.shape[0]}, "
                        f"the first frame is {self.info.width}x{self.info.height}; all frames of a video "
                        "must have one size")
                yield image
            return
        container, handle = self._open_container()
        try:
            count = 0
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame- and slice-threaded decoding inside FFmpeg
            for frame in container.decode(stream):
                if count >= n:
                    break
                yield frame.to_ndarray(format="rgb24")
                count += 1
            if count < n:
                raise VideoReadError(f"{self.task.uri}: expected {n} frames, decoded {count}")
        except VideoReadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VideoReadError(f"decoding {self.task.uri} failed: {exc}") from exc
        finally:
            container.close()
            handle.close()

    def first_frame(self) -> np.ndarray:
        return next(iter(self))
