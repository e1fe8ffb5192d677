"""The ``openai`` backend: any OpenAI-compatible chat-completions server (vLLM, llama.cpp
server, Ollama, hosted APIs).

Requests go out over the standard library's HTTP client from a bounded thread pool
(``concurrency``), each with a timeout. 429, 5xx, timeouts, dropped connections and malformed
bodies are retried with exponential backoff and jitter (a ``Retry-After`` header is honoured);
other HTTP errors fail at once with the server's message. ``check`` runs in the driver and
refuses to start a run when the server cannot be reached, the key is missing or rejected, or
the model is not served. The API key is read from an environment variable at request time and
is never written anywhere.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from rsdata.llm.backends import Backend, GenRequest, LlmBackendError, OnResult

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 30.0


class _Retryable(Exception):
    """A failure worth another try (overload, server error, timeout, garbled reply)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        concurrency: int = 4,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.concurrency = max(1, concurrency)
        self.extra_body = extra_body or {}
        self.requests_sent = 0

    @property
    def model(self) -> str:
        return self._model

    def fingerprint(self) -> str:
        return f"openai:{self.base_url}:{self._model}"

    # -- plumbing ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise LlmBackendError(
                    f"llm_caption: the environment variable {self.api_key_env} "
                    "(api_key_env) is not set; export the server's API key in it"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        """One HTTP exchange; raises _Retryable or LlmBackendError."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=self._headers()
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {exc.code}: {detail}", _retry_after(exc)) from None
            if exc.code in (401, 403):
                raise LlmBackendError(
                    f"the LLM server at {self.base_url} refused the request "
                    f"(HTTP {exc.code}: {detail}); check the API key in "
                    f"{self.api_key_env or 'api_key_env'}"
                ) from None
            raise LlmBackendError(
                f"the LLM server at {self.base_url} answered HTTP {exc.code} to "
                f"{method} {path}: {detail}"
            ) from None
        except TimeoutError as exc:
            raise _Retryable(f"timed out after {timeout:g} s ({exc})") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timed out after {timeout:g} s") from None
            raise _Retryable(f"cannot connect ({reason})") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Retryable(f"the reply is not JSON: {raw[:80]!r}") from None

    def check(self) -> None:
        """Reachable, authorised and serving the model, or a clear error."""
        timeout = min(self.timeout_s, 10.0)
        try:
            listing = self._call("GET", "/models", None, timeout)
        except _Retryable as exc:
            raise LlmBackendError(
                f"cannot reach the LLM server at {self.base_url} ({exc}). Start it (vLLM: `vllm "
                "serve MODEL`, llama.cpp: `llama-server -m MODEL.gguf`, Ollama: `ollama serve`) or "
                "fix llm_caption.base_url; leave backend out to caption offline with the embedded "
                "model"
            ) from None
        except LlmBackendError as exc:
            if "HTTP 404" in str(exc):  # a server without /models: reachable is enough
                return
            raise
        served = (
            [m.get("id") for m in (listing or {}).get("data", []) if isinstance(m, dict)]
            if isinstance(listing, dict)
            else []
        )
        if served and self._model not in served:
            raise LlmBackendError(
                f"the LLM server at {self.base_url} does not serve model "
                f"{self._model!r}; it serves: {', '.join(map(str, served))}"
            )

    # -- generating ----------------------------------------------------------------------------
    def body(self, request: GenRequest) -> dict[str, Any]:
        messages = request.prompt.chat()
        if request.prompt.prefill:
            messages.append({"role": "assistant", "content": request.prompt.prefill})
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "n": 1,
        }
        if request.temperature > 0:
            body.update(top_p=request.top_p, seed=request.seed)
        body.update(self.extra_body)
        return body

    def complete(self, request: GenRequest) -> str:
        """One chat completion with retries and backoff; the answer's text."""
        body = self.body(request)
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                self.requests_sent += 1
                reply = self._call("POST", "/chat/completions", body, self.timeout_s)
                return _content(reply)
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.max_retries:
                    break
                delay = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt) * (0.5 + random.random())
                if exc.retry_after is not None:
                    delay = min(MAX_BACKOFF_S, max(delay, exc.retry_after))
                time.sleep(delay)
        raise LlmBackendError(
            f"the LLM server at {self.base_url} failed {self.max_retries + 1} "
            f"times in a row (last: {last}); generations made so far are "
            "cached, so rerunning the same command resumes from them"
        )

    def generate(self, requests: list[GenRequest], on_result: OnResult | None = None) -> list[str]:
        results: list[str] = [""] * len(requests)
        if not requests:
            return results
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(requests)), thread_name_prefix="rsdata-llm"
        ) as pool:
            pending: dict[Future[str], int] = {
                pool.submit(self.complete, r): i for i, r in enumerate(requests)
            }
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = pending.pop(fut)
                        results[i] = fut.result()
                        if on_result is not None:
                            on_result(i, results[i])
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
        return results


def _content(reply: Any) -> str:
    try:
        choice = reply["choices"][0]
        content = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise _Retryable(
            f"the reply has no choices[0].message.content: {str(reply)[:80]}"
        ) from None
    if not isinstance(content, str):
        raise _Retryable("the reply's content is not text")
    return content


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason or ""
    try:
        err = json.loads(raw).get("error")
        if isinstance(err, dict):
            return str(err.get("message", raw))[:300]
        if err:
            return str(err)[:300]
    except (ValueError, AttributeError):
        pass
    return raw[:300] or str(exc.reason)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
