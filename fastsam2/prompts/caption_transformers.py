"""The ``transformers`` caption backend: LLaVA in this process (CPU, one GPU, or the tiny random model)."""

from __future__ import annotations

import numpy as np

from fastsam2.models.llava import DEFAULT_LLAVA
from fastsam2.prompts.caption import DEFAULT_MAX_NEW_TOKENS, RegionCaptioner, llava_prompt


class TransformersCaptioner(RegionCaptioner):
    """LLaVA in-process through transformers; batched, greedy, left-padded."""

    backend = "transformers"

    def __init__(self, model: str = DEFAULT_LLAVA, *, random_weights: bool = False, device: str = "auto",
                 region_mode: str = "crop", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        from fastsam2.models.factory import load_llava

        llava = load_llava(model, random_weights=random_weights, device=device)
        self.hf_model, self.processor = llava.model, llava.processor
        super().__init__(llava.name, region_mode=region_mode, max_new_tokens=max_new_tokens,
                         random_weights=llava.random_weights)
        tok = self.processor.tokenizer
        # Never let the model emit an image placeholder or padding as a "word".
        self._suppress = [i for i in (tok.convert_tokens_to_ids("<image>"), tok.pad_token_id) if i is not None]

    def generate(self, regions: list[np.ndarray], question: str) -> list[str]:
        import torch
        from PIL import Image

        prompt = llava_prompt(question)
        inputs = self.processor(
            images=[Image.fromarray(r) for r in regions],
            text=[prompt] * len(regions),
            return_tensors="pt",
            padding=True,
        )
        dev, dtype = self.hf_model.device, self.hf_model.dtype
        inputs = {k: (v.to(dev, dtype) if k == "pixel_values" else v.to(dev)) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.hf_model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=1,
                do_sample=False,
                suppress_tokens=self._suppress,
            )
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)
