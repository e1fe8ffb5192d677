"""The generation cache: keys, persistence, several processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from rsdata.llm.cache import GenerationCache, cache_key


def test_key_depends_on_model_prompt_version_prompt_and_settings() -> None:
    base = cache_key("m", "v1", {"messages": [["user", "x"]]}, {"temperature": 0.0})
    assert base == cache_key("m", "v1", {"messages": [["user", "x"]]}, {"temperature": 0.0})
    assert base != cache_key("m2", "v1", {"messages": [["user", "x"]]}, {"temperature": 0.0})
    assert base != cache_key("m", "v2", {"messages": [["user", "x"]]}, {"temperature": 0.0})
    assert base != cache_key("m", "v1", {"messages": [["user", "y"]]}, {"temperature": 0.0})
    assert base != cache_key("m", "v1", {"messages": [["user", "x"]]}, {"temperature": 0.7})


def test_answers_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c" / "cache.sqlite"
    cache = GenerationCache(path)
    cache.put("k1", "m", "v1", " farmland.")
    cache.close()
    again = GenerationCache(path)
    assert again.get("k1") == " farmland." and again.get("k2") is None and len(again) == 1
    assert again.get_many(["k1", "k2"]) == {"k1": " farmland."}


def _writer(path: str, start: int) -> None:
    cache = GenerationCache(path)
    for i in range(start, start + 200):
        cache.put(f"k{i}", "m", "v1", f"answer {i}")
    cache.close()


def test_several_processes_share_one_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = GenerationCache(path)
    assert len(cache) == 400
    assert cache.get("k399") == "answer 399" and cache.get("k0") == "answer 0"
