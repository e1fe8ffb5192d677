"""Annotation rounds against a real Label Studio (the session server of conftest.py): push, two
annotators who sign up and answer through Label Studio's web endpoints, status, pull, the merged
corpus; idempotent and interrupted pushes; bad tokens, a dead server, a rejected config; answers
from unknown keys or another corpus version; the other two round kinds. No mock anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("label_studio_sdk", reason="the annotate extra (label-studio-sdk) is not installed")
pytest.importorskip("krippendorff", reason="the annotate extra (krippendorff) is not installed")

from annotation_helpers import Annotator, rating, verdict, visible, write_annotation_corpus
from cutting_proxy import CuttingProxy

from rsdata import schemas
from rsdata.annotation.rounds import push
from rsdata.annotation.server import AnnotationServerError, LabelStudioServer
from rsdata.cli import main
from rsdata.corpus.reader import Corpus
from rsdata.corpus.samples import list_shards, read_shard
from rsdata.inspect import run_inspect

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "annotation" / "configs"
EDIT = "Two buildings next to a dirt track."


def template(tmp: Path, round_id: str, kind: str = "caption_verification", count: int = 8,
             config: Path | None = None, **extra: Any) -> Path:
    data = {"version": 1, "id": round_id, "kind": kind, "config": str(config or CONFIGS / f"{kind}.xml"),
            "overlap": 2, "sampling": {"count": count, "stratify": ["tag", "origin"]},
            "instructions": "<p>Check the caption.</p>", **extra}
    path = tmp / f"{round_id}.yaml"
    path.write_text(json.dumps(data))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def shard_hashes(corpus: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((corpus / "shards").iterdir())}


def files_text(*dirs: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for d in dirs for p in d.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("annotation")


@pytest.fixture(scope="module")
def corpus(work: Path) -> Path:
    return write_annotation_corpus(work / "corpus", n=12)


@pytest.fixture(scope="module")
def annotators(label_studio: Any) -> tuple[Annotator, Annotator]:
    return (Annotator(label_studio.url, "ann1@example.com", "ann1-password-1"),
            Annotator(label_studio.url, "ann2@example.com", "ann2-password-2"))


def test_round_push_annotate_status_pull(label_studio: Any, annotators: tuple[Annotator, Annotator],
                                         corpus: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, token = label_studio.url, label_studio.token
    state, out = work / "state", work / "merged"
    tpl = template(work, "cap-r1")
    creds = ["--url", url, "--token", token, "--state", state]
    parent_before = shard_hashes(corpus)

    code, text, err = cli(capsys, "annotate", "push", corpus, "--round", tpl, *creds)
    assert code == 0, err
    record = json.loads((state / "rounds" / "cap-r1.json").read_text())
    pid = record["project"]
    assert "8 imported now" in text and len(record["sample_keys"]) == 8
    # a second push adds no task
    code, text, err = cli(capsys, "annotate", "push", corpus, "--round", tpl, *creds)
    assert code == 0 and "0 imported now, 8 were there already" in text
    server = LabelStudioServer(url, token)
    assert server.project(pid)["task_number"] == 8

    a1, a2 = annotators
    tasks = a1.tasks(pid)
    k = sorted(tasks)
    assert set(k) == set(record["sample_keys"])
    a1.annotate(tasks[k[0]], verdict("accept")), a2.annotate(tasks[k[0]], verdict("accept"))
    a1.annotate(tasks[k[1]], verdict("edit", EDIT)), a2.annotate(tasks[k[1]], verdict("edit", f"  {EDIT}\n"))
    a1.annotate(tasks[k[2]], verdict("reject", reason="artefact"))
    a2.annotate(tasks[k[2]], verdict("reject", reason="blank_or_cloud"))
    a1.annotate(tasks[k[3]], verdict("accept")), a2.annotate(tasks[k[3]], verdict("reject", reason="other"))
    a1.annotate(tasks[k[4]], verdict("edit", "")), a2.annotate(tasks[k[4]], verdict("edit", "x" * 10_000))
    a1.annotate(tasks[k[5]], [], cancelled=True)
    # tasks rsdata did not push: an unknown key, and a known key from another corpus version
    sha = record["corpus"]["manifest_sha256"]
    foreign = [{"data": {**server_task_data(server, pid, tasks[k[6]]), "rsdata_key": "zz_unknown"}},
               {"data": {**server_task_data(server, pid, tasks[k[6]]), "rsdata_manifest_sha256": "e" * 64}}]
    before = {t["id"] for t in server.tasks(pid)}
    assert server.import_tasks(pid, foreign) == 2
    new_ids = [t["id"] for t in server.tasks(pid) if t["id"] not in before]
    assert len(new_ids) == 2
    for tid in new_ids:
        a1.annotate(tid, verdict("accept"))

    code, text, err = cli(capsys, "annotate", "status", *creds)
    assert code == 0, err
    assert "with answers 5" in text and "completed 5 (all 2 answers)" in text and "annotators 2" in text
    assert "skipped 1" in text and "agreement so far: verdict: alpha" in text

    code, text, err = cli(capsys, "annotate", "pull", corpus, "--round", tpl, "--out", out, "--quiet", *creds)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parent"]["manifest_sha256"] == sha and manifest["nsamples"] == 11
    stage = next(s for s in manifest["stages"] if s["name"] == "human_merge")
    assert stage["dropped"] == {"human_rejected": 1}
    c = stage["counters"]
    assert (c["resolution:accepted"], c["resolution:edited"], c["resolution:rejected"], c["resolution:tie"]) == (1, 1, 1, 1)
    assert c["invalid_answer:empty_caption"] == 1 and c["invalid_answer:caption_too_long"] == 1
    assert c["no_answers"] == 3 and c["not_in_round"] == 4 and c["human_captions"] == 1
    assert shard_hashes(corpus) == parent_before  # the parent is only read

    answers = json.loads(next((out / "annotation").glob("answers-*.json")).read_text())
    assert answers["counts"]["skipped_unknown_key"] == 1
    assert answers["counts"]["skipped_other_corpus_version"] == 1
    assert answers["counts"]["cancelled_answers"] == 1 and answers["counts"]["annotators"] == 2
    check_agreement(answers)

    samples = {s.key: s for s in Corpus(out).samples()}
    assert k[2] not in samples
    human = samples[k[1]].meta["captions"][0]
    assert human["kind"] == "human" and human["text"] == EDIT == samples[k[1]].caption
    assert human["round"] == "cap-r1" and human["project"] == pid and human["time"]
    assert len(human["annotators"]) == 2 and all(re.fullmatch(r"a-[0-9a-f]{16}", a) for a in human["annotators"])
    tie = samples[k[3]].meta
    assert tie["annotation"]["rounds"][0]["resolution"] == "tie"
    assert tie["captions"][0]["kind"] == "template"
    for s in samples.values():
        assert not schemas.errors("sample", s.meta)
    # training reads it like any corpus: shards with counts, raw entries with the new captions
    shards = list_shards([out])
    assert sum(s.nsamples for s in shards) == 11
    assert any(e["txt"].decode() == EDIT for s in shards for e in read_shard(s))

    report, summary = run_inspect(out, samples=4)
    assert "Human review (round cap-r1" in report and "human 1, template" in report
    assert summary["annotation"]["agreement"]["verdict"]["alpha"] == answers["agreement"]["verdict"]["alpha"]

    # nothing rsdata wrote holds the token, nor an annotator's e-mail
    written = files_text(out, state) + text + err
    assert token not in written and "ann1@example.com" not in written

    # pulling again without new answers resumes: the same recipe, nothing redone
    code, text, err = cli(capsys, "annotate", "pull", corpus, "--round", tpl, "--out", out, "--quiet", *creds)
    assert code == 0 and "0 run, " in text
    # the round belongs to its corpus version: pulling it into the merged version is refused
    code, text, err = cli(capsys, "annotate", "pull", out, "--round", tpl, "--out", work / "x", *creds)
    assert code == 2 and "was pushed from corpus version" in err
    # a later round leaves out what this one reviewed (answered keys), taken from the merged version
    code, text, err = cli(capsys, "annotate", "push", out, "--round", template(work, "cap-r2", count=50), *creds)
    assert code == 0, err
    later = json.loads((state / "rounds" / "cap-r2.json").read_text())["sample_keys"]
    assert not set(later) & {k[0], k[1], k[3], k[4]} and set(later) >= {k[6], k[7]}
    server.close()


def server_task_data(server: LabelStudioServer, pid: int, task_id: int) -> dict[str, Any]:
    return next(t["data"] for t in server.tasks(pid) if t["id"] == task_id)


def check_agreement(answers: dict[str, Any]) -> None:
    """The pull's figures equal krippendorff's alpha computed here from the raw answers."""
    import krippendorff

    code = {"accept": 0, "edit": 1, "reject": 2}
    units = [[a["verdict"] for a in e["answers"] if a["verdict"]] for e in answers["tasks"].values()]
    units = [u for u in units if len(u) >= 2]
    data = np.array([[code[u[0]] for u in units], [code[u[1]] for u in units]], dtype=float)
    expect = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert answers["agreement"]["verdict"]["alpha"] == pytest.approx(expect, abs=1e-4)
    assert answers["agreement"]["verdict"]["units"] == 5
    assert answers["agreement"]["keep_or_reject"]["percent_agreement"] == 0.8


def test_interrupted_push_resumes_without_duplicates(label_studio: Any, work: Path, corpus: Path) -> None:
    state = work / "state-cut"
    tpl = template(work, "cap-cut", count=12)
    proxy = CuttingProxy(label_studio.port, b"return_task_ids=true", after=2)
    try:
        with pytest.raises(AnnotationServerError) as err:
            push(corpus, tpl, proxy.url, label_studio.token, state_dir=state, batch_size=3, quiet=True)
        message = str(err.value)
        assert proxy.cut.is_set() and proxy.url in message and "again resumes" in message
        assert label_studio.token not in message
        record = json.loads((state / "rounds" / "cap-cut.json").read_text())
        server = LabelStudioServer(label_studio.url, label_studio.token)
        assert server.project(record["project"])["task_number"] == 6  # the lost answer's batch is in
        result = push(corpus, tpl, proxy.url, label_studio.token, state_dir=state, batch_size=3, quiet=True)
        assert (result.already, result.imported) == (6, 6)
        keys = [t["data"]["rsdata_key"] for t in server.tasks(record["project"])]
        assert len(keys) == len(set(keys)) == 12
        server.close()
    finally:
        proxy.close()


def test_wrong_token_and_dead_server_are_clear_errors(label_studio: Any, work: Path, corpus: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from rsdata.annotation.localserver import free_port

    tpl = template(work, "cap-bad")
    wrong = "0" * 40
    code, out, err = cli(capsys, "annotate", "push", corpus, "--round", tpl, "--url", label_studio.url,
                         "--token", wrong, "--state", work / "state-bad")
    assert code == 2 and label_studio.url in err and "refused the API token" in err
    assert wrong not in err + out and label_studio.token not in err + out
    dead = f"http://127.0.0.1:{free_port()}"
    code, out, err = cli(capsys, "annotate", "push", corpus, "--round", tpl, "--url", dead,
                         "--token", label_studio.token, "--state", work / "state-bad")
    assert code == 2 and f"cannot reach Label Studio at {dead}" in err and label_studio.token not in err
    assert not (work / "state-bad" / "rounds" / "cap-bad.json").exists()  # nothing recorded


def test_config_label_studio_rejects_shows_its_error(label_studio: Any, work: Path, corpus: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = work / "bad_config.xml"
    config.write_text((CONFIGS / "caption_verification.xml").read_text().replace(
        'toName="caption" rows="3"', 'toName="no_such_object" rows="3"'))
    args = ["annotate", "push", corpus, "--round", template(work, "cap-badcfg", config=config),
            "--url", label_studio.url, "--token", label_studio.token, "--state", work / "state-badcfg"]
    code, out, err = cli(capsys, *args)
    assert code == 2 and "rejected the labeling config" in err and "no_such_object" in err
    config.write_text((CONFIGS / "caption_verification.xml").read_text())  # fixed: the push goes through
    code, out, err = cli(capsys, *args)
    assert code == 0 and "8 imported now" in out, err


def test_rating_and_tag_check_rounds(label_studio: Any, annotators: tuple[Annotator, Annotator],
                                     work: Path, corpus: Path) -> None:
    from rsdata.annotation.rounds import pull

    url, token = label_studio.url, label_studio.token
    a1, a2 = annotators
    state = work / "state-kinds"
    rate_tpl = template(work, "rate-r1", kind="match_rating", count=3)
    pushed = push(corpus, rate_tpl, url, token, state_dir=state, quiet=True)
    tasks = a1.tasks(pushed.project)
    keys = sorted(tasks)
    for key, (x, y) in zip(keys, [(4, 5), (2, 2), (1, 5)]):
        a1.annotate(tasks[key], rating(x)), a2.annotate(tasks[key], rating(y))
    result = pull(corpus, rate_tpl, work / "rated", url, token, state_dir=state, quiet=True)
    scores = {s.key: s.meta["scores"].get("human_match") for s in Corpus(work / "rated").samples()}
    assert [scores[k] for k in keys] == [4.5, 2.0, 3.0]
    assert result.answers["agreement"]["rating"]["level"] == "ordinal"
    assert result.answers["agreement"]["rating"]["units"] == 3

    tag_tpl = template(work, "tags-r1", kind="tag_check", count=2, sampling={
        "count": 2, "stratify": ["origin"], "exclude_reviewed": False})
    pushed = push(corpus, tag_tpl, url, token, state_dir=state, quiet=True)
    server = LabelStudioServer(url, token)
    data = {t["data"]["rsdata_key"]: t["data"] for t in server.tasks(pushed.project)}
    tasks = a1.tasks(pushed.project)
    for key, task in tasks.items():
        labels = [o["value"] for o in data[key]["tag_options"]]
        a1.annotate(task, visible(labels[:1])), a2.annotate(task, visible(labels))
    result = pull(corpus, tag_tpl, work / "tagged", url, token, state_dir=state, quiet=True)
    samples = {s.key: s for s in Corpus(work / "tagged").samples()}
    for key in tasks:
        checks = samples[key].meta["annotation"]["rounds"][0]["tags"]
        first, second = (o["value"].rsplit("(", 1)[1][:-1] for o in data[key]["tag_options"][:2])
        assert checks[first]["decision"] is True and checks[second]["decision"] is None  # 1-1: a tie
        tag = next(t for t in samples[key].meta["osm"]["tags"] if t["tag"] == first)
        assert tag["human_visible"] is True
    assert result.answers["agreement"]["tag_visible"]["units"] == 4
    server.close()


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="Debian's chromium and chromium-driver are not installed")
def test_task_renders_in_label_studio_web_ui(label_studio: Any, work: Path, corpus: Path,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """Log in to Label Studio's own UI with headless Chromium, open a task, check that the image
    and the caption render; the screenshot is kept as a test artifact."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    state = work / "state-ui"
    pushed = push(corpus, template(work, "cap-ui", count=2), label_studio.url, label_studio.token,
                  state_dir=state, quiet=True)
    server = LabelStudioServer(label_studio.url, label_studio.token)
    task = next(iter(server.tasks(pushed.project)))
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    artifacts = Path(os.environ.get("RSDATA_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(f"{label_studio.url}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(label_studio.username)
        driver.find_element(By.NAME, "password").send_keys(label_studio.password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        WebDriverWait(driver, 30).until(lambda d: "/user/login" not in d.current_url)
        driver.get(f"{label_studio.url}/projects/{pushed.project}/data?task={task['id']}")
        wait = WebDriverWait(driver, 60)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), task["data"]["caption"][:30]))
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "What OpenStreetMap maps"))
        # the labeling view draws the tile large (the data manager's thumbnails are 50 px): loaded
        # (naturalWidth) and laid out at a usable size
        image = wait.until(lambda d: next((i for i in d.find_elements(By.TAG_NAME, "img")
                                           if i.size["width"] >= 200 and d.execute_script(
                                               "return arguments[0].complete && arguments[0].naturalWidth", i)),
                                          None))
        assert image is not None
    finally:
        driver.save_screenshot(str(artifacts / "label_studio_task.png"))
        print(f"screenshot: {artifacts / 'label_studio_task.png'}")
        driver.quit()
        server.close()
