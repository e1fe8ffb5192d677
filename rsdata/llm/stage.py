"""The ``llm_caption`` stage: LLM-written captions, kept only when the OSM tags support them.

For each sample with visible features: fact phrases -> one prompt per configured style ->
the backend (through the generation cache) -> the validator. A rejected answer is retried with
the validator's complaints fed back, up to ``retries`` times; then the sample keeps its template
captions (``on_failure: fallback``, adding one if it has none) or is dropped
(``on_failure: drop``). Accepted LLM captions go first (the primary caption, the ``txt``
member) with their provenance. Samples are processed in batches so local models generate
batched and servers get concurrent requests.

Counters in the manifest (``stages[].counters``): ``answers`` (validated model answers),
``accepted``, ``rejected``, ``rejected:<reason>`` (each reason once per rejected answer),
``cache_hits``, ``captions_requested``, ``captions_fallback``, ``samples_with_llm_caption``,
``skipped:no_visible_tags``, ``accepted_on_try:<n>`` and ``coverage_permille_sum`` (sum over
accepted captions: divide by ``accepted`` for the mean coverage).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rsdata.captions.templates import captions_for
from rsdata.llm.audit import AUDIT_DIR, AuditLog
from rsdata.llm.backends import Backend, GenRequest, make_backend
from rsdata.llm.cache import GenerationCache, cache_key
from rsdata.llm.facts import build_facts
from rsdata.llm.prompts import (
    PROMPT_VERSION,
    STYLES,
    Prompt,
    build_prompt,
    complete_answer,
    retry_prompt,
)
from rsdata.llm.validator import Limits, Validator, Verdict
from rsdata.sample import Caption, Sample
from rsdata.settings import from_config
from rsdata.stage import RunContext, Stage
from rsdata.stats import StageStats

CACHE_FILE = "llm_cache.sqlite"


@dataclass(frozen=True)
class LlmCaptionSettings:
    """The ``llm_caption`` stage's options, parsed once from the schema-resolved recipe
    (``$defs.llm_caption``; defaults live in the schema)."""

    backend: str
    device: str
    dtype: str
    api_key_env: str | None
    timeout_s: float
    max_retries: int
    backoff_s: float
    concurrency: int
    styles: list[str]
    batch_size: int
    temperature: float
    retry_temperature: float
    top_p: float
    seed: int
    retries: int
    min_coverage: float
    max_facts: int
    on_failure: str
    cache: str | None
    audit: bool
    model: str | None = None
    gguf_file: str | None = None
    model_name: str | None = None
    base_url: str | None = None
    extra_body: dict[str, Any] | None = None


@dataclass
class _Job:
    """One caption to write: a sample, a style, the current prompt, what came of it."""

    index: int
    style: str
    prompt: Prompt
    facts: list[str]
    accepted: Caption | None = None
    tries: int = 0
    last: Verdict | None = field(default=None, repr=False)


def clean_answer(raw: str, prompt: Prompt) -> str:
    """The caption from a raw answer: first paragraph, pre-filled start, at most the style's
    number of sentences (what a stop sequence would cut)."""
    text = raw.replace("\r", "").strip()
    text = text.split("\n")[0].strip() if text else ""
    caption = complete_answer(prompt.prefill, text)
    sentences = re.split(r"(?<=[.!?])\s+", caption)
    return " ".join(sentences[: STYLES[prompt.style].max_sentences]).strip()


class LlmCaption(Stage):
    name = "llm_caption"
    settings_class: ClassVar[type | None] = LlmCaptionSettings
    needs_objects: ClassVar[bool] = True  # relation claims are checked against osm.objects

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.settings = from_config(LlmCaptionSettings, self.config, "llm_caption")
        # resolved in prepare (driver), shipped to workers with the pickled stage
        self.model_path: str | None = self.settings.model
        self.cache_path: str | None = None
        self.audit_dir: str | None = None
        self.init_lazy()

    def init_lazy(self) -> None:
        self._lazy_backend: Backend | None = None
        self._lazy_cache: GenerationCache | None = None
        self._lazy_validator: Validator | None = None

    # -- driver side ------------------------------------------------------------------------------
    def resources(self) -> dict[str, float]:
        """A local model told to use CUDA needs a GPU per worker (``auto`` takes one if present)."""
        if self.settings.backend != "openai" and self.settings.device == "cuda":
            return {"num_gpus": 1.0}
        return {}

    def backend_config(self) -> dict[str, Any]:
        """The options ``make_backend`` reads, with the model path as resolved by ``prepare``."""
        return {**dataclasses.asdict(self.settings), "model": self.model_path}

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        cfg = self.settings
        if cfg.backend == "transformers" and cfg.model:
            self.model_path = str(ctx.resolve(cfg.model))
        cache = ctx.resolve(cfg.cache) if cfg.cache else ctx.state_dir / CACHE_FILE
        self.cache_path = str(cache)
        self.audit_dir = str(ctx.state_dir / AUDIT_DIR) if cfg.audit else None
        backend = make_backend(self.backend_config())
        backend.check()  # a server that is down, a missing model: fail before any partition runs
        n_cached = len(GenerationCache(cache))
        return {
            "backend": cfg.backend,
            "model": backend.model,
            "prompt_version": PROMPT_VERSION,
            "cache": str(cache),
            "cached_generations": n_cached,
        }

    # -- worker side ------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._lazy_backend is None:
            self._lazy_backend = make_backend(self.backend_config())
        return self._lazy_backend

    @property
    def cache(self) -> GenerationCache:
        if self._lazy_cache is None:
            if self.cache_path is None:
                raise RuntimeError("LlmCaption.prepare() must run before the stage is used")
            self._lazy_cache = GenerationCache(self.cache_path)
        return self._lazy_cache

    @property
    def validator(self) -> Validator:
        if self._lazy_validator is None:
            self._lazy_validator = Validator()
        return self._lazy_validator

    def __call__(self, samples: Iterator[Sample], stats: StageStats) -> Iterator[Sample]:
        audit = AuditLog(self.audit_dir)
        batch: list[Sample] = []
        for sample in samples:
            stats.n_in += 1
            audit.note_sample(sample.key)
            batch.append(sample)
            if len(batch) >= self.settings.batch_size:
                yield from self._process(batch, stats, audit)
                batch = []
        if batch:
            yield from self._process(batch, stats, audit)
        audit.write()

    def _process(self, batch: list[Sample], stats: StageStats, audit: AuditLog) -> Iterator[Sample]:
        jobs: list[_Job] = []
        for i, sample in enumerate(batch):
            facts = build_facts(sample.meta, self.settings.max_facts)
            if not facts:
                stats.extra["skipped:no_visible_tags"] += 1
                continue
            for style in self.settings.styles:
                jobs.append(_Job(i, style, build_prompt(facts, style), [f.tag for f in facts]))
                stats.extra["captions_requested"] += 1
        for attempt in range(self.settings.retries + 1):
            active = [j for j in jobs if j.accepted is None]
            if not active:
                break
            answers = self._generate(active, attempt, stats)
            for job, (raw, req, cached) in zip(active, answers):
                self._judge(job, batch[job.index], raw, req, cached, attempt, stats, audit)
        accepted: dict[int, list[Caption]] = {}
        for job in jobs:
            if job.accepted is not None:
                accepted.setdefault(job.index, []).append(job.accepted)
            else:
                stats.extra["captions_fallback"] += 1
        for i, sample in enumerate(batch):
            caps = accepted.get(i, [])
            if not caps and any(j.index == i for j in jobs) and self.settings.on_failure == "drop":
                stats.drop("llm_rejected")
                continue
            for cap in reversed(caps):
                sample.add_caption(cap, primary=True)
            if caps:
                stats.extra["samples_with_llm_caption"] += 1
            elif not sample.captions:
                for cap in captions_for(sample.meta, count=1):
                    sample.add_caption(cap)
            stats.n_out += 1
            yield sample

    def _generate(
        self, jobs: list[_Job], attempt: int, stats: StageStats
    ) -> list[tuple[str, GenRequest, bool]]:
        """Answers for the jobs' current prompts: from the cache, else from the backend (each
        new answer is cached the moment it arrives)."""
        cfg = self.settings
        temperature = cfg.temperature if attempt == 0 else cfg.retry_temperature
        reqs = [
            GenRequest(
                j.prompt,
                STYLES[j.style].max_new_tokens,
                float(temperature),
                float(cfg.top_p),
                cfg.seed + attempt,
            )
            for j in jobs
        ]
        fingerprint = self.backend.fingerprint()
        keys = [
            cache_key(fingerprint, PROMPT_VERSION, r.prompt.key_data(), r.settings()) for r in reqs
        ]
        found = self.cache.get_many(keys)
        # identical prompts (tiles with the same facts) are generated once
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found:
                first.setdefault(k, i)
        missing = list(first.values())
        model = self.backend.model

        def keep(mi: int, text: str) -> None:
            self.cache.put(keys[missing[mi]], model, PROMPT_VERSION, text)

        fresh = self.backend.generate([reqs[i] for i in missing], keep) if missing else []
        got = {keys[i]: text for i, text in zip(missing, fresh)}
        stats.extra["cache_hits"] += len(keys) - len(missing)
        return [
            (found[k] if k in found else got[k], reqs[i], k in found or i not in missing)
            for i, k in enumerate(keys)
        ]

    def _judge(
        self,
        job: _Job,
        sample: Sample,
        raw: str,
        req: GenRequest,
        cached: bool,
        attempt: int,
        stats: StageStats,
        audit: AuditLog,
    ) -> None:
        style = STYLES[job.style]
        text = clean_answer(raw, job.prompt)
        osm = sample.meta.get("osm") or {}
        verdict = self.validator.validate(
            text,
            osm.get("tags", []),
            job.facts,
            Limits(style.max_words, style.max_sentences, float(self.settings.min_coverage)),
            prefill=job.prompt.prefill,
            geo=sample.meta.get("geo"),
            objects=osm.get("objects"),
        )
        stats.extra["answers"] += 1
        audit.add(
            {
                "key": sample.key,
                "style": job.style,
                "try": attempt + 1,
                "cached": cached,
                "text": text,
                "ok": verdict.ok,
                "reasons": verdict.reasons,
                "complaints": verdict.complaints(),
                "coverage": round(verdict.coverage, 3),
                "model": self.backend.model,
                "prompt_version": PROMPT_VERSION,
                "settings": req.settings(),
            }
        )
        if verdict.ok:
            stats.extra["accepted"] += 1
            stats.extra[f"accepted_on_try:{attempt + 1}"] += 1
            stats.extra["coverage_permille_sum"] += round(1000 * verdict.coverage)
            job.accepted = Caption(
                text=text,
                kind="llm",
                provenance={
                    "backend": self.settings.backend,
                    "model": self.backend.model,
                    "prompt_version": PROMPT_VERSION,
                    "settings": {**req.settings(), "style": job.style, "try": attempt + 1},
                    "coverage": round(verdict.coverage, 3),
                },
            )
            return
        stats.extra["rejected"] += 1
        for reason in verdict.reasons:
            stats.extra[f"rejected:{reason}"] += 1
        job.prompt = retry_prompt(job.prompt, text, verdict.complaints())


def audit_path(out_dir: str | Path) -> Path:
    """Where a run's LLM audit files are."""
    return Path(out_dir) / ".rsdata" / AUDIT_DIR
