"""LLaVA for region captions: the real checkpoint, or a tiny random one built in code.

``--random-weights`` must work on a CPU machine with no downloads, so the tiny
model is built here from configs and a tokenizer trained in a few milliseconds
on a built-in word list. It uses the real classes (``LlavaForConditionalGeneration``,
``LlavaProcessor``, ``CLIPImageProcessor``, ``PreTrainedTokenizerFast``), so the
caption code path is the same one a real checkpoint goes through; only the
words it produces are noise.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

DEFAULT_LLAVA = "llava-hf/llava-1.5-7b-hf"
#: The name recorded for the tiny random model (it has no hub id).
TINY_LLAVA_NAME = "tiny-random-llava"

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]

# Training text for the tiny tokenizer: the words of LLaVA-1.5's prompt format
# plus everyday object/colour/scene words, so that random generations decode to
# readable (if meaningless) words and the phrase refiner sees word-like input.
_CORPUS = """
USER: ASSISTANT: Describe the main object in this image in a few words.
Describe the object inside the red box in one short sentence.
a an the this that is are with on in at of and near by under over
dog cat car bike bicycle motorcycle person man woman boy girl horse bird kite
surfer board boat train truck bus road street grass water sky tree house wall
brown black white red blue green yellow grey orange small large fluffy shiny
running jumping riding sitting standing flying driving parked wooden metal
photo picture image close view shadow track field sand wave snow mountain
"""

#: The chat template shipped with the llava-hf/llava-1.5-*-hf checkpoints (their
#: ``chat_template.json``), verbatim: the tiny model renders prompts exactly as the real
#: one does. It iterates over a message's content *parts* (``{"type": "image"}``,
#: ``{"type": "text"}``), so it needs OpenAI-style list content: flattened string
#: content renders no ``<image>`` (see ``caption_vllm.processor_config_kwargs``).
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}"
    "{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int = 320):
    """A BPE tokenizer (Llama-style metaspace) trained in code; ``<image>`` is special.

    Training is deterministic for a fixed corpus, so two builds give the same ids.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=list(string.printable),  # newline and punctuation never map to <unk>
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.split("\n"), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",  # decoder-only generation pads on the left
    )


def build_tiny_llava(seed: int = 0, image_size: int = 56, patch_size: int = 14):
    """A tiny random LLaVA-1.5 (2-layer CLIP tower, 2-layer Llama) and its processor.

    Heads are 32 wide, a size GPU attention kernels (vLLM's included) support,
    so the same model also serves GPU smoke runs (``benchmarks/caption_gpu_smoke.py``).

    Returns ``(model, processor)``. The processor counts one extra image token for
    CLIP's CLS (``num_additional_image_tokens=1``) because the ``default`` feature
    strategy drops it: (56/14)^2 + 1 - 1 = 16 image tokens per image.
    """
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tiny_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    num_patches = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=num_patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_15_CHAT_TEMPLATE,
    )
    return model, processor


def save_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny random LLaVA as an hf folder (for vLLM smoke runs with no downloads)."""
    path = Path(path)
    model, processor = build_tiny_llava(seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
