"""Plain helpers the tests share (fixtures stay in conftest.py; tests import these, never conftest).

Videos with exact ground truth come from :mod:`fastsam2.synthetic`; these add what only tests
need: manifests for them, a noise frame, SAM2's own folder-of-JPEGs layout, a free loopback
port, the CLI under click's runner or as a subprocess, and process clean-up for the cluster tests.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fastsam2.synthetic import SyntheticVideo, first_frame_prompts


REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The reference data folder: ``$FASTSAM2_SHARED_DATA``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("FASTSAM2_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def invoke(*args, command=None):
    """``fastsam2-batch ARGS`` (or another click ``command``) under click's test runner; arguments as str."""
    from click.testing import CliRunner

    if command is None:
        from fastsam2.cli import main as command
    return CliRunner().invoke(command, [str(a) for a in args])


#: The virtual environment's scripts (``fastsam2-batch``, ``ray``) for subprocess runs.
BIN = Path(sys.executable).parent


def cli(*args: str, env_extra: dict | None = None, home: Path | None = None, timeout: float = 300):
    """Run ``fastsam2-batch ARGS`` in a clean shell-like environment (no RAY_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if home is not None:
        env["HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([str(BIN / "fastsam2-batch"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def write_manifest(path: Path, rows: Iterable[dict], fieldnames: list[str] | None = None) -> Path:
    """A CSV manifest of ``rows`` (columns: ``fieldnames``, else every key, sorted)."""
    rows = list(rows)
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames or sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def click_rows(video: SyntheticVideo, uri: str) -> list[dict]:
    """Manifest rows for ``video`` at ``uri``: one first-frame click per object (its deepest point)."""
    return [{"uri": uri, "obj_id": p["obj_id"], "point": "{},{}".format(*p["point"])}
            for p in first_frame_prompts(video)]


def noise_frame(height: int = 60, width: int = 100, seed: int = 0) -> np.ndarray:
    """A uint8 RGB frame of uniform noise (what a caption backend gets when content does not matter)."""
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def write_disc_video(folder: Path, num_frames: int) -> Path:
    """A red disc moving over a random background, as JPEGs (160x120), for SAM2's own folder loader."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bg = np.array(Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize((160, 120)))
    yy, xx = np.mgrid[:120, :160]
    for t in range(num_frames):
        im = bg.copy()
        im[(xx - 48 - 6 * t) ** 2 + (yy - 60) ** 2 < 18**2] = (240, 30, 30)
        Image.fromarray(im).save(folder / f"{t:05d}.jpg")
    return folder


def processes_mentioning(text: str) -> list[int]:
    """PIDs (other than ours) whose command line mentions ``text``, e.g. a private Ray temp dir."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def kill_processes_mentioning(text: str, timeout_s: float) -> None:
    """SIGKILL every process whose command line mentions ``text`` until none is left (or time is up)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        left = processes_mentioning(text)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


#: The AWS variables :func:`start_moto` sets.
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def start_moto() -> tuple[subprocess.Popen, str]:
    """A real S3 endpoint on loopback: moto in server mode, in its own process.

    The AWS variables point at it process-wide, so Ray workers started later inherit them.
    Returns (process, url); raises RuntimeError when the server does not come up in 30 s.
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def tiny_sam2(target: str, overrides: list[str] | None = None):
    """The tests' small SAM2: random-weight SAM2.1 hiera-t at 256 px on CPU (at most 2 threads),
    built as ``target`` (stock or pruned predictor class), with optional hydra ``overrides``."""
    import torch

    from fastsam2.models.factory import load_sam2

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_sam2("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True,
                     predictor_target=target, extra_overrides=overrides).model


def track_from_frame0(predictor, video: Path, clicks: dict | None = None, boxes: dict | None = None):
    """Prompt objects on frame 0 (``{obj_id: [[x, y]]}`` clicks, ``{obj_id: [x0, y0, x1, y1]}`` boxes)
    and propagate through ``video``; returns (inference state, {frame: video-res mask logits})."""
    state = predictor.init_state(str(video))
    for obj_id, points in (clicks or {}).items():
        predictor.add_new_points_or_box(state, 0, obj_id, points=points, labels=[1] * len(points))
    for obj_id, box in (boxes or {}).items():
        predictor.add_new_points_or_box(state, 0, obj_id, box=box)
    masks = {f: m.clone() for f, _, m in predictor.propagate_in_video(state)}
    return state, masks
