"""The ``openai`` backend against a real chat-completions server on 127.0.0.1.

The server (``http.server`` in a thread, random port) answers well (it joins the prompt's fact
phrases), slowly, with 500s or 429s, with garbage, with non-JSON, or not at all, and can die
after a number of answers. Runs go through the real CLI/executor with a fixture raster + OSM.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds
from fixtures import rasters as fx

from rsdata.captions.templates import join_words
from rsdata.cli import main as cli_main
from rsdata.llm.audit import read_audit
from rsdata.llm.backends import GenRequest, LlmBackendError
from rsdata.llm.facts import Fact
from rsdata.llm.openai_http import OpenAIBackend
from rsdata.llm.prompts import build_prompt
from rsdata.corpus.manifest import load_manifest, shard_paths

MODEL = "test-model"


class ChatServer:
    """A chat-completions server whose behaviour the test sets (``mode``, ``fail_first``)."""

    def __init__(
        self,
        mode: str = "good",
        fail_first: int = 0,
        delay_s: float = 0.0,
        die_after: int | None = None,
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.mode = mode
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.die_after = die_after
        self.api_key = api_key
        self.lock = threading.Lock()
        self.posts = 0
        self.answered: list[str] = []  # first user message of every answered request
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if (
                    server.api_key
                    and self.headers.get("Authorization") != f"Bearer {server.api_key}"
                ):
                    self._send(401, {"error": {"message": "invalid api key"}})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorised():
                    return
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.posts += 1
                    n = server.posts
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server.respond(self, n, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def respond(self, h: Any, n: int, body: dict[str, Any]) -> None:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if n <= self.fail_first:
            if self.mode == "slow":
                time.sleep(self.delay_s)
            elif self.mode == "429":
                h._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                return
            else:
                h._send(500, {"error": {"message": "internal error"}})
                return
        elif self.delay_s and self.mode == "busy":
            time.sleep(self.delay_s)
        if self.mode == "badjson":
            h._send(200, b"<html>bad gateway</html>")
            return
        if self.die_after is not None and len(self.answered) >= self.die_after:
            h.close_connection = True
            threading.Thread(target=self.stop, daemon=True).start()
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.mode == "garbage":
            text = " the the village of mountains near a beach beach, with 99 bridges"
        else:
            facts = user.split("\n")[0].split("; ")
            text = " " + join_words(facts) + "."
        with self.lock:
            self.answered.append(user.split("\n")[0])
        h._send(
            200,
            {
                "id": f"c{n}",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
            },
        )

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        except OSError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def recipe_for(tmp_path: Path, raster_files: dict[str, Path], osm_geojson: Path):
    def make(**llm: Any) -> Path:
        recipe = fx.recipe_dict(
            raster_files["utm_rgb"], osm=osm_geojson, captions=True, size=64, partition_size=4
        )
        # no allow_remote: a server's base_url is not a remote input
        recipe["stages"].append(
            {
                "type": "llm_caption",
                "backend": "openai",
                "model": MODEL,
                "max_retries": 2,
                "backoff_s": 0.01,
                "timeout_s": 5,
                **llm,
            }
        )
        return fx.write_recipe(tmp_path, recipe)

    return make


def read_samples(out: Path) -> list[dict[str, Any]]:
    metas = []
    for path in shard_paths(out):
        for entry in wds.WebDataset(str(path), shardshuffle=False):
            metas.append({"meta": json.loads(entry["json"]), "txt": entry["txt"].decode()})
    return metas


def llm_counters(out: Path) -> Counter[str]:
    stage = next(s for s in load_manifest(out)["stages"] if s["name"] == "llm_caption")
    return Counter(stage.get("counters", {}))


def test_good_server_captions_every_sample(recipe_for, tmp_path: Path, capsys) -> None:
    with ChatServer() as server:
        out = tmp_path / "out"
        assert (
            cli_main(
                ["run", str(recipe_for(base_url=server.base_url)), "--out", str(out), "--quiet"]
            )
            == 0
        )
    samples = read_samples(out)
    c = llm_counters(out)
    with_facts = [s for s in samples if any(t["visible"] for t in s["meta"]["osm"]["tags"])]
    assert with_facts and c["accepted"] == c["captions_requested"] == len(with_facts)
    for s in with_facts:
        cap = s["meta"]["captions"][0]
        assert cap["kind"] == "llm" and s["txt"] == cap["text"]
        assert cap["backend"] == "openai" and cap["model"] == MODEL
        assert cap["prompt_version"] and cap["settings"]["temperature"] == 0.0
        assert cap["text"].startswith("This aerial image shows ")
        assert any(other["kind"] == "template" for other in s["meta"]["captions"][1:])
    assert cli_main(["inspect", str(out), "--samples", "2"]) == 0
    report = capsys.readouterr().out
    assert "LLM captions" in report and "(100.0%)" in report


def test_rerun_with_a_shared_cache_sends_no_request(recipe_for, tmp_path: Path) -> None:
    cache = tmp_path / "shared" / "cache.sqlite"
    with ChatServer() as server:
        recipe = recipe_for(base_url=server.base_url, cache=str(cache))
        assert cli_main(["run", str(recipe), "--out", str(tmp_path / "a"), "--quiet"]) == 0
        first = server.posts
        assert cli_main(["run", str(recipe), "--out", str(tmp_path / "b"), "--quiet"]) == 0
        assert first > 0 and server.posts == first
    assert llm_counters(tmp_path / "b")["cache_hits"] == llm_counters(tmp_path / "a")["answers"]
    assert [s["txt"] for s in read_samples(tmp_path / "a")] == [
        s["txt"] for s in read_samples(tmp_path / "b")
    ]


@pytest.mark.parametrize("mode", ["500", "429"])
def test_server_errors_are_retried(mode: str, recipe_for, tmp_path: Path) -> None:
    with ChatServer(mode=mode, fail_first=2) as server:
        out = tmp_path / "out"
        assert (
            cli_main(
                [
                    "run",
                    str(recipe_for(base_url=server.base_url, concurrency=1)),
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        assert server.posts == len(server.answered) + 2
    c = llm_counters(out)
    assert c["accepted"] == c["captions_requested"] > 0


def test_slow_answers_time_out_and_are_retried() -> None:
    with ChatServer(mode="slow", fail_first=1, delay_s=1.5) as server:
        backend = OpenAIBackend(
            server.base_url, MODEL, timeout_s=0.5, max_retries=2, backoff_s=0.01
        )
        prompt = build_prompt([Fact("building=yes", "a building in the center")])
        started = time.perf_counter()
        [answer] = backend.generate([GenRequest(prompt, 20)])
        assert answer == " a building in the center."
        assert backend.requests_sent == 2 and time.perf_counter() - started < 1.5


def test_timeouts_give_up_with_a_clear_error() -> None:
    with ChatServer(mode="slow", fail_first=99, delay_s=1.0) as server:
        backend = OpenAIBackend(
            server.base_url, MODEL, timeout_s=0.2, max_retries=1, backoff_s=0.01
        )
        with pytest.raises(LlmBackendError, match="failed 2 times.*timed out.*resumes"):
            backend.generate([GenRequest(build_prompt([Fact("a=b", "a pond")]), 20)])


def test_non_json_replies_fail_after_retries() -> None:
    with ChatServer(mode="badjson") as server:
        backend = OpenAIBackend(server.base_url, MODEL, max_retries=2, backoff_s=0.01)
        with pytest.raises(LlmBackendError, match="not JSON"):
            backend.generate([GenRequest(build_prompt([Fact("a=b", "a pond")]), 20)])
        assert server.posts == 3


def test_concurrency_is_bounded() -> None:
    with ChatServer(mode="busy", delay_s=0.15) as server:
        backend = OpenAIBackend(server.base_url, MODEL, concurrency=3)
        prompts = [
            build_prompt([Fact("building=yes", f"{w} buildings in the center")])
            for w in ("two", "three", "four", "five", "six", "seven", "eight", "nine")
        ]
        seen: list[int] = []
        answers = backend.generate(
            [GenRequest(p, 20) for p in prompts], lambda i, _t: seen.append(i)
        )
        assert [a.split()[0] for a in answers] == [
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
        ]
        assert sorted(seen) == list(range(8))
        assert 1 < server.max_in_flight <= 3


def test_garbage_answers_are_rejected_and_fall_back_to_templates(
    recipe_for, tmp_path: Path
) -> None:
    with ChatServer(mode="garbage") as server:
        out = tmp_path / "out"
        assert (
            cli_main(
                [
                    "run",
                    str(recipe_for(base_url=server.base_url, retries=1)),
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
    c = llm_counters(out)
    assert c["accepted"] == 0 and c["rejected"] == c["answers"] == 2 * c["captions_requested"]
    assert (
        c["captions_fallback"] == c["captions_requested"]
        and c["rejected:not_english"] == c["rejected"]
    )
    for s in read_samples(out):
        assert all(cap["kind"] == "template" for cap in s["meta"]["captions"])
    records = list(read_audit(out))
    assert len(records) == c["answers"] and not any(r["ok"] for r in records)
    assert {r["try"] for r in records} == {1, 2}


def test_unreachable_server_is_a_clear_error_at_start(recipe_for, tmp_path: Path, capsys) -> None:
    recipe = recipe_for(base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert cli_main(["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the LLM server" in err and "embedded" in err
    assert not (tmp_path / "out" / "shards").exists()


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with ChatServer(api_key="s3cret") as server:
        backend = OpenAIBackend(server.base_url, MODEL, api_key_env="RSDATA_TEST_KEY")
        monkeypatch.delenv("RSDATA_TEST_KEY", raising=False)
        with pytest.raises(LlmBackendError, match="RSDATA_TEST_KEY.*not set"):
            backend.check()
        monkeypatch.setenv("RSDATA_TEST_KEY", "wrong")
        with pytest.raises(LlmBackendError, match="HTTP 401"):
            backend.check()
        monkeypatch.setenv("RSDATA_TEST_KEY", "s3cret")
        backend.check()
        with pytest.raises(LlmBackendError, match="does not serve model 'other'"):
            OpenAIBackend(server.base_url, "other", api_key_env="RSDATA_TEST_KEY").check()


def test_endpoint_dying_halfway_loses_nothing_and_resumes_from_the_cache(
    recipe_for, tmp_path: Path, capsys
) -> None:
    port = free_port()
    out = tmp_path / "out"
    with ChatServer(die_after=5, port=port) as first:
        recipe = recipe_for(base_url=first.base_url, batch_size=2, concurrency=1, max_retries=1)
        assert cli_main(["run", str(recipe), "--out", str(out), "--quiet"]) != 0
    assert "failed" in capsys.readouterr().err
    answered_before = set(first.answered)
    assert len(answered_before) >= 4
    with ChatServer(port=port) as second:
        assert cli_main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    # nothing the dead server had answered was asked again
    assert not answered_before & set(second.answered)
    samples = read_samples(out)
    with_facts = [s for s in samples if any(t["visible"] for t in s["meta"]["osm"]["tags"])]
    assert with_facts and all(s["meta"]["captions"][0]["kind"] == "llm" for s in with_facts)
    # the audit has one record per answer, none twice, after the resume
    records = list(read_audit(out))
    ids = [(r["key"], r["style"], r["try"]) for r in records]
    assert len(ids) == len(set(ids)) == len(with_facts)
    assert sum(r["cached"] for r in records) >= 1


def test_prompt_is_sent_with_the_prefilled_answer() -> None:
    backend = OpenAIBackend(
        "http://127.0.0.1:9/v1", MODEL, extra_body={"continue_final_message": True}
    )
    body = backend.body(GenRequest(build_prompt([Fact("t=x", "farmland")]), 30, 0.7, 0.9, 3))
    assert body["messages"][-1] == {"role": "assistant", "content": "This aerial image shows"}
    assert body["seed"] == 3 and body["top_p"] == 0.9 and body["continue_final_message"] is True
    assert body["max_tokens"] == 30 and body["model"] == MODEL
