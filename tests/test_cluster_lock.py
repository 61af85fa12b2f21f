"""cluster/gpu-constraints.txt: the GPU image's locked stack agrees with itself, with Ray, and
with this project, and pip resolves the project's `vllm` extra against it."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys

from pathlib import Path
from urllib.parse import urlparse

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "cluster" / "gpu-constraints.txt"


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: a lock pins exact versions"
            pins[req.name.lower().replace("_", "-")] = Version(spec.version)
    return pins


def test_the_lock_pins_one_consistent_gpu_stack():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11's tomllib")
    pins = _lock()
    # The Ray the client runs (submit and the cluster must match) ...
    assert pins["ray"] == Version(importlib.metadata.version("ray"))
    # ... and the vLLM that Ray's own `llm` extra pins (what ray.data.llm is tested with).
    ray_llm = [Requirement(r) for r in importlib.metadata.requires("ray") or []]
    (vllm_pin,) = [r for r in ray_llm if r.name == "vllm" and r.marker and r.marker.evaluate({"extra": "llm"})]
    assert vllm_pin.specifier.contains(pins["vllm"])
    # The project's own requirements hold for every pinned package they name.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + project["optional-dependencies"]["vllm"]:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not locked"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} breaks {text}"


def _pypi_reachable() -> bool:
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    host = urlparse(url).hostname or "pypi.org"
    try:
        with socket.create_connection((host, 443 if url.startswith("https") else 80), timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the GPU stack (vllm, CUDA torch) is Linux-only")
def test_pip_resolves_the_vllm_extra_against_the_lock(tmp_path):
    """What the image build does, without installing anything: ~1 min, metadata only."""
    if not _pypi_reachable():
        pytest.skip("the package index is unreachable from here: cannot resolve the lock (needs network)")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(tmp_path / "report.json"), "-c", str(LOCK), f"{REPO}[vllm]"],
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    got = {i["metadata"]["name"].lower().replace("_", "-"): Version(i["metadata"]["version"])
           for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    pins = _lock()
    for name in ("vllm", "torch", "torchvision", "transformers", "ray"):
        assert Version(got[name].base_version) == pins[name], name
