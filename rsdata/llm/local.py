"""The ``transformers`` backend: a causal LM from a local directory or a GGUF file.

Loaded once per worker process, on CUDA when present (bfloat16/float16), else on the CPU
(float32). Prompts go through the tokenizer's chat template (a plain fallback when it has
none), the pre-filled answer start is appended, and batches are left-padded and generated
together. Sampling is seeded per batch, so a rerun of the same batch gives the same answers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from rsdata.errors import MissingDependencyError
from rsdata.llm.backends import Backend, GenRequest, LlmBackendError, OnResult
from rsdata.llm.prompts import Prompt

STOP_STRINGS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>")


class TransformersBackend(Backend):
    kind = "transformers"

    def __init__(
        self,
        path: str,
        gguf_file: str | None = None,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
    ) -> None:
        self.path = str(path)
        self.gguf_file = gguf_file
        self._name = name or (
            f"{Path(self.path).name}/{gguf_file}" if gguf_file else Path(self.path).name
        )
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def model(self) -> str:
        return self._name

    def fingerprint(self) -> str:
        """Name plus the names, sizes and mtimes of the weight files (cheap, changes on retrain)."""
        root = Path(self.path)
        files = (
            [root / self.gguf_file]
            if self.gguf_file
            else sorted(
                p for p in root.glob("*") if p.suffix in (".safetensors", ".bin", ".gguf", ".json")
            )
        )
        parts = [self._name]
        for p in files:
            try:
                st = p.stat()
                parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(p.name)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20] + ":" + self._name

    def check(self) -> None:
        root = Path(self.path)
        target = root / self.gguf_file if self.gguf_file else root / "config.json"
        if not target.is_file():
            raise LlmBackendError(
                f"llm_caption: no model at {target}. Give model: a local "
                "Hugging Face model directory (with config.json) or the "
                "directory of a GGUF file plus gguf_file"
            )
        _import_transformers()
        if self.gguf_file:
            try:
                import gguf  # noqa: F401 - transformers reads GGUF files through it
            except ImportError:
                raise MissingDependencyError("gguf", "llm", "loading a GGUF model") from None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> tuple[Any, Any]:
        if self._model is not None:
            return self._model, self._tokenizer
        self.check()
        torch, transformers = _import_transformers()
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # every GPU path falls back to the CPU
        dtype = {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }.get(self.dtype)
        if dtype is None:
            dtype = (
                (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                if device.startswith("cuda")
                else torch.float32
            )
        kw: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, **kw)
        model = transformers.AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, **kw)
        model.to(device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model, self._tokenizer, self._device = model, tokenizer, device
        return model, tokenizer

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model reads it: chat template (or a plain fallback) + prefill."""
        _, tok = self._load()
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                prompt.chat(), tokenize=False, add_generation_prompt=True
            )
        else:
            text = "".join(f"{role.capitalize()}: {content}\n" for role, content in prompt.messages)
            text += "Assistant:"
        return text + (" " + prompt.prefill if text.endswith(":") else prompt.prefill)

    # -- generating ----------------------------------------------------------------------------
    def generate(self, requests: list[GenRequest], on_result: OnResult | None = None) -> list[str]:
        results: list[str] = [""] * len(requests)
        # one batch shares sampling settings: group equal settings, keep the order within a group
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.top_p, r.seed, r.max_new_tokens), []).append(i)
        for (temperature, top_p, seed, max_new), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                texts = self._generate_batch(
                    [requests[i].prompt for i in chunk], max_new, temperature, top_p, seed
                )
                for i, text in zip(chunk, texts):
                    results[i] = text
                    if on_result is not None:
                        on_result(i, text)
        return results

    def _generate_batch(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> list[str]:
        torch, _ = _import_transformers()
        model, tok = self._load()
        enc = tok(
            [self.render(p) for p in prompts],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self._device)
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        for s in STOP_STRINGS:
            tid = tok.convert_tokens_to_ids(s) if s in tok.get_vocab() else None
            if tid is not None and tid not in eos:
                eos.append(tid)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": eos or None,
        }
        if temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        return [_cut_stops(t) for t in texts]

    def close(self) -> None:
        self._model = self._tokenizer = None


def _cut_stops(text: str) -> str:
    for s in STOP_STRINGS:
        text = text.split(s)[0]
    return text


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            exc.name or "transformers", "llm", "the llm_caption stage's transformers backend"
        ) from None
    return torch, transformers
