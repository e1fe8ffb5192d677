"""Helpers for the LLM tests: a tiny random causal LM saved to disk, and tiles with OSM stats.

The tiny model is a 2-layer Llama with a byte-level BPE tokenizer trained here on a few
caption-like sentences and a ChatML chat template; nothing comes from a model hub. Its weights
are random, so its answers are fluent-looking garbage: they exercise batching, the cache, the
validator's rejections and the template fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "This aerial image shows seven buildings in the top left and farmland covering most of the image.",
    "A minor road runs across the image; dirt tracks in the bottom left; a river on the right.",
    "Farmland, forest, water, a nature reserve, a path and houses near the center.",
    "What does this aerial image show? It shows buildings, roads and fields.",
    "You rewrite lists of facts about an aerial image as plain English.",
    "one two three four five six seven eight nine ten buildings roads tracks paths",
]


def build_tiny_llm(directory: Path, seed: int = 0, vocab_size: int = 400) -> Path:
    """Train a tiny tokenizer, build a random 2-layer Llama, save both to ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def tag(
    name: str,
    phrase: str,
    plural: str | None = None,
    *,
    count: int = 1,
    share: float = 0.0,
    length: float = 0.0,
    position: str = "center",
    cells: list[str] | None = None,
    geom: str = "polygon",
    mass: bool = False,
    category: str = "other",
    visible: bool = True,
    area_m2: float | None = None,
) -> dict[str, Any]:
    """One tag's statistics as rsdata.osm.join writes them."""
    key, value = name.split("=")
    return {
        "key": key,
        "value": value,
        "tag": name,
        "phrase": phrase,
        "plural": plural or (phrase if mass else phrase + "s"),
        "mass": mass,
        "category": category,
        "count": count,
        "visible_count": count if visible else 0,
        "visible": visible,
        "primary": True,
        "area_share": share,
        "area_m2": area_m2 if area_m2 is not None else round(share * 409600, 1),
        "length_m": length,
        "position": position,
        "cells": cells or [position],
        "geom_types": {geom: count},
    }


def farm_tile() -> list[dict[str, Any]]:
    """Farmland over most of the tile, seven buildings top left, a minor road across."""
    return [
        tag(
            "landuse=farmland",
            "farmland",
            share=0.72,
            position="across",
            mass=True,
            category="landuse",
            cells=["center", "left", "top", "bottom", "top left", "right"],
        ),
        tag(
            "building=yes",
            "building",
            count=7,
            share=0.01,
            position="top left",
            category="building",
            cells=["top left", "top"],
            area_m2=700.0,
        ),
        tag(
            "highway=unclassified",
            "minor road",
            count=3,
            length=820.0,
            position="across",
            geom="line",
            category="road",
            cells=["left", "center", "right"],
        ),
    ]
