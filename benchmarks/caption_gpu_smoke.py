"""GPU smoke test of the ``vllm`` caption backend: real vLLM engines, real frames.

Runs the region captioner through vLLM on a GPU machine, the way a cluster run
does, and checks the plumbing end to end: one non-empty caption per region,
phrases from them, and (optionally) the same regions through the transformers
backend for comparison. CPU CI never runs this; it needs ``vllm`` and CUDA.

Two engine paths (``--mode``):

- ``llm``: :class:`fastsam2.prompts.caption_vllm.VLLMCaptioner` (``vllm.LLM`` in
  this process, what a Ray actor holds);
- ``ray``: :func:`fastsam2.prompts.caption_vllm.served_caption_stage`, the pipeline's
  served stage (Ray Data LLM: multimodal prep + chat template on CPU, vLLM engine actors).

Weights: ``--model`` (hf id resolved through the local hf cache, or a folder),
or ``--tiny`` to write the tiny random LLaVA to a temp folder and serve that:
no download at all, captions are noise, the engine path is real.

    python benchmarks/caption_gpu_smoke.py --tiny --mode both --json out.json
    python benchmarks/caption_gpu_smoke.py --model llava-hf/llava-1.5-7b-hf --compare-transformers
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = REPO.parent / "shared" / "data" / "davis2016-val" / "JPEGImages" / "480p"


def load_first_frames(root: Path, limit: int) -> list[tuple[str, np.ndarray]]:
    """The first frame of each sequence folder (or a synthetic frame when none exist)."""
    from PIL import Image

    out = []
    for seq in sorted(p for p in root.glob("*") if p.is_dir())[:limit]:
        jpgs = sorted(seq.glob("*.jpg"))
        if jpgs:
            out.append((seq.name, np.asarray(Image.open(jpgs[0]).convert("RGB"))))
    if not out:
        print(f"no frames under {root}; using synthetic frames", file=sys.stderr)
        rng = np.random.default_rng(0)
        out = [(f"synthetic-{i}", rng.integers(0, 255, (480, 854, 3), dtype=np.uint8)) for i in range(limit)]
    return out


def central_box(frame: np.ndarray) -> tuple[float, float, float, float]:
    """A box over the central half of the frame (DAVIS objects are mostly central)."""
    h, w = frame.shape[:2]
    return (w * 0.25, h * 0.25, w * 0.75, h * 0.75)


def run_llm(model: str, frames, boxes, engine_overrides: dict, max_new_tokens: int) -> dict:
    from fastsam2.prompts.caption_vllm import VLLMCaptioner

    t0 = time.perf_counter()
    cap = VLLMCaptioner(model, engine_kwargs=engine_overrides, max_new_tokens=max_new_tokens)
    t1 = time.perf_counter()
    captions = cap.caption(frames, boxes)
    t2 = time.perf_counter()
    captions_again = cap.caption(frames, boxes)
    return {
        "captions": captions,
        "deterministic": captions == captions_again,
        "load_s": t1 - t0,
        "caption_s": t2 - t1,
        "regions_per_s": len(frames) / max(t2 - t1, 1e-9),
    }


def run_ray(model: str, names, frames, boxes, engine_overrides: dict, max_new_tokens: int) -> dict:
    """The pipeline's own served caption stage (``served_caption_stage``) on rows like the
    propose stage makes them: task JSON (one object per video here) plus its region as JPEG bytes."""
    import ray

    from fastsam2.config import JobConfig, ObjectPrompt, VideoTask
    from fastsam2.prompts.caption import region_jpeg
    from fastsam2.prompts.caption_vllm import served_caption_stage
    from fastsam2.prompts.region import region_image

    cfg = JobConfig(inputs=["unused"], output="unused",
                    prompts={"caption_backend": "vllm", "caption_model": model, "caption_engine": engine_overrides},
                    resources={"caption": {"num_gpus": 1, "batch_size": max(1, len(names))}})
    rows = [
        {"video_id": n, "task": VideoTask(video_id=n, uri="unused://", prompt_source="auto",
                                          objects=[ObjectPrompt(obj_id=1, box=list(b))]).model_dump_json(),
         "region_jpegs": [region_jpeg(region_image(f, b, "crop"))]}
        for n, f, b in zip(names, frames, boxes)
    ]
    t0 = time.perf_counter()
    out = served_caption_stage(ray.data.from_items(rows), cfg).take_all()
    t1 = time.perf_counter()
    tasks = {r["video_id"]: VideoTask.model_validate_json(r["task"]) for r in out}
    errors = {n: t.error["message"] for n, t in tasks.items() if t.error}
    return {"captions": [(tasks[n].caption or "") if n in tasks else "" for n in names],
            "errors": errors, "total_s": t1 - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llava-hf/llava-1.5-7b-hf")
    ap.add_argument("--tiny", action="store_true", help="serve the tiny random LLaVA (no download)")
    ap.add_argument("--mode", choices=("llm", "ray", "both"), default="llm")
    ap.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument("--compare-transformers", action="store_true")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("caption_gpu_smoke needs a CUDA GPU (vLLM is GPU-only)", file=sys.stderr)
        return 2
    from fastsam2.prompts.refine import refine_caption

    model = args.model
    engine_overrides: dict = {"gpu_memory_utilization": args.gpu_memory_utilization, "enforce_eager": True}
    if args.tiny:
        from fastsam2.models.llava import save_tiny_llava

        model = str(save_tiny_llava(Path(tempfile.mkdtemp(prefix="tiny-llava-")) / "model"))
        engine_overrides["max_model_len"] = 512

    named = load_first_frames(args.frames, args.limit)
    names = [n for n, _ in named]
    frames = [f for _, f in named]
    boxes = [central_box(f) for f in frames]
    import vllm

    result: dict = {
        "model": args.model if not args.tiny else "tiny-random-llava",
        "vllm_version": vllm.__version__,
        "device": torch.cuda.get_device_name(0),
        "videos": names,
        "boxes": boxes,
    }
    ok = True
    if args.mode in ("llm", "both"):
        r = run_llm(model, frames, boxes, engine_overrides, args.max_new_tokens)
        r["phrases"] = [refine_caption(c) for c in r["captions"]]
        result["llm"] = r
        ok &= all(r["captions"]) and r["deterministic"]
    if args.mode in ("ray", "both"):
        if args.mode == "both":
            import gc

            gc.collect()
            torch.cuda.empty_cache()
        r = run_ray(model, names, frames, boxes, engine_overrides, args.max_new_tokens)
        r["phrases"] = [refine_caption(c) for c in r["captions"]]
        result["ray"] = r
        ok &= all(r["captions"])
    if args.compare_transformers:
        from fastsam2.prompts.caption_transformers import TransformersCaptioner

        hf = TransformersCaptioner(model, device="cuda", max_new_tokens=args.max_new_tokens)
        result["transformers"] = {"captions": hf.caption(frames, boxes)}
    result["ok"] = bool(ok)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
