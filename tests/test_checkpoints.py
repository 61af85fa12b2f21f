"""Checkpoint resolution: the Hugging Face hub cache first (no network), then a checksum-checked download.

No network here: a fake hub cache (``HF_HUB_CACHE``) holds a small random-weight
checkpoint in the hub's own layout, and a loopback HTTP server stands in for the
official download URL; ``HF_ENDPOINT`` points at a closed port (hub unreachable).
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fastsam2.cli import main
from fastsam2.models import sam2 as sam2_models
from fastsam2.models.sam2 import WeightsUnavailable, build_video_predictor, fetch_checkpoint, hf_repo_for

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the hub is unreachable
    monkeypatch.setenv("FASTSAM2_CACHE", str(tmp_path / "fastsam2-cache"))
    monkeypatch.delenv(sam2_models.SHA256_ENV, raising=False)
    return hub


def put_in_hub(hub: Path, repo: str, filename: str, data: bytes) -> Path:
    """The hub cache layout: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    path = folder / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_repo_names_come_from_sam2():
    assert hf_repo_for("sam2.1_hiera_t") == "facebook/sam2.1-hiera-tiny"
    assert hf_repo_for("sam2_hiera_l") == "facebook/sam2-hiera-large"


def test_checkpoint_from_the_hub_cache_loads_into_the_model(offline_hub, tmp_path):
    # A small random-weight checkpoint (fp16) of hiera-t, saved as the official files are: {"model": state_dict}.
    donor = build_video_predictor("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True, seed=7)
    state = {k: v.half() if v.is_floating_point() else v for k, v in donor.state_dict().items()}
    buf = tmp_path / "ckpt.pt"
    torch.save({"model": state}, buf)
    cached = put_in_hub(offline_hub, "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", buf.read_bytes())

    assert fetch_checkpoint("sam2.1_hiera_t") == cached
    model = build_video_predictor("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=False, seed=0)
    assert model.random_weights is False
    name, want = next((k, v) for k, v in state.items() if v.is_floating_point() and v.numel() > 100)
    assert torch.equal(model.state_dict()[name].half(), want)  # the weights are the hub cache's, not seed 0's


class _Server(http.server.ThreadingHTTPServer):
    payload = b""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        self.wfile.write(self.server.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def official_url(monkeypatch):
    server = _Server(("127.0.0.1", 0), _Handler)
    server.payload = b"not really a checkpoint, but bytes with a digest" * 100
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sam2.1_hiera_tiny.pt"
    monkeypatch.setitem(sam2_models.CHECKPOINT_URLS, "sam2.1_hiera_t", url)
    yield server
    server.shutdown()


def test_direct_download_is_checksum_checked(offline_hub, official_url, monkeypatch, tmp_path):
    good = hashlib.sha256(official_url.payload).hexdigest()
    monkeypatch.setenv(sam2_models.SHA256_ENV, "0" * 64)
    with pytest.raises(WeightsUnavailable, match="checksum mismatch"):
        fetch_checkpoint("sam2.1_hiera_t")
    assert not list((tmp_path / "fastsam2-cache").glob("*.pt")), "a file that failed its check is not kept"
    monkeypatch.setenv(sam2_models.SHA256_ENV, good)
    path = fetch_checkpoint("sam2.1_hiera_t")
    assert path.read_bytes() == official_url.payload
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == good


def test_unpinned_download_records_its_digest(offline_hub, official_url, caplog):
    path = fetch_checkpoint("sam2.1_hiera_t")
    assert "no published SHA-256" in caplog.text
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_help_shows_the_cache_locations(offline_hub):
    import fastsam2.cli.options as opts

    assert "HF_HUB_CACHE" in opts._checkpoint_help() and str(offline_hub) in opts._checkpoint_help()
    r = CliRunner().invoke(main, ["run", "--help"], terminal_width=400)
    assert "HF_HUB_CACHE" in r.output and "FASTSAM2_CACHE" in r.output
