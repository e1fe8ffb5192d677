"""Annotation rounds without a server: templates, configs, sampling, majority rules, agreement,
and the merge as an ordinary run over a parent corpus."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from annotation_helpers import write_annotation_corpus

from rsdata import schemas
from rsdata.annotation import answers as answers_mod
from rsdata.annotation.merge import HumanMergeSettings, resolve_captions, resolve_rating, resolve_tags
from rsdata.annotation.sampling import allocate, select
from rsdata.annotation.server import LabelStudioServer, credentials
from rsdata.annotation.state import RoundStore, annotator_id
from rsdata.annotation.template import TemplateError, check_config, load_round
from rsdata.corpus.reader import Corpus
from rsdata.errors import InputError, RsdataError, UsageError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "annotation" / "configs"
SETTINGS = HumanMergeSettings(answers="x", max_caption_chars=100, min_answers=1, ties="keep")
ANSWERS = {"round": "r1", "project": 7, "kind": "caption_verification"}


def write_template(tmp: Path, name: str = "r.yaml", **fields: Any) -> Path:
    data = {"version": 1, "id": "r1", "kind": "caption_verification",
            "config": str(CONFIGS / "caption_verification.xml")}
    data.update(fields)
    path = tmp / name
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


# -- templates and configs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["caption_verification", "match_rating", "tag_check"])
def test_shipped_round_templates_load(name: str) -> None:
    template = load_round(REPO / "annotation" / "rounds" / f"{name}.yaml")
    assert template.kind == name
    assert template.overlap >= 1 and template.sampling["count"] >= 1
    assert len(template.title) <= 50
    assert template.config_sha256 == hashlib.sha256(template.config_xml.encode()).hexdigest()


def test_template_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"kind: 'captions' is not one of"):
        load_round(write_template(tmp_path, kind="captions"))
    with pytest.raises(TemplateError, match=r"sampling: .*allowed fields"):
        load_round(write_template(tmp_path, sampling={"cnt": 3}))
    with pytest.raises(TemplateError, match="sampling.score must name"):
        load_round(write_template(tmp_path, sampling={"stratify": ["score_bucket"]}))
    with pytest.raises(TemplateError, match="not found"):
        load_round(tmp_path / "missing.yaml")


def test_config_checks(tmp_path: Path) -> None:
    good = (CONFIGS / "caption_verification.xml").read_text()
    check_config(good, "caption_verification", "good")
    with pytest.raises(TemplateError, match="lacks"):
        check_config(good.replace('name="verdict"', 'name="choice"'), "caption_verification", "x")
    with pytest.raises(TemplateError, match=r"\$photo"):
        check_config(good.replace("$image", "$photo"), "caption_verification", "x")
    with pytest.raises(TemplateError, match="DTD"):
        check_config('<!DOCTYPE x [<!ENTITY a "b">]>' + good, "caption_verification", "x")
    with pytest.raises(TemplateError, match="well-formed"):
        check_config("<View><Image></View>", "caption_verification", "x")
    with pytest.raises(TemplateError, match="must be a <Rating>"):
        check_config('<View><Image name="image" value="$image"/><Choices name="match" toName="image">'
                     '<Choice value="1"/></Choices></View>', "match_rating", "x")
    path = write_template(tmp_path, kind="tag_check")  # caption config for a tag check
    with pytest.raises(TemplateError, match="visible_tags"):
        load_round(path)


# -- sampling -------------------------------------------------------------------------------------


def test_allocate_is_proportional_and_covers_every_stratum() -> None:
    sizes = {("a",): 80, ("b",): 15, ("c",): 5}
    assert allocate(sizes, 20) == {("a",): 16, ("b",): 3, ("c",): 1}
    assert allocate({("a",): 98, ("b",): 1, ("c",): 1}, 10) == {("a",): 8, ("b",): 1, ("c",): 1}
    assert allocate(sizes, 500) == sizes
    assert sum(allocate({("x", str(i)): i + 1 for i in range(7)}, 13).values()) == 13


def test_select_is_stratified_seeded_and_leaves_out_reviewed(tmp_path: Path) -> None:
    corpus = Corpus(write_annotation_corpus(tmp_path / "c", n=24, size=32))
    sampling = {"count": 9, "seed": 0, "stratify": ["tag", "origin"], "score": None,
                "score_buckets": [0.2], "exclude_reviewed": True}
    first = select(corpus, "caption_verification", sampling, set())
    again = select(corpus, "caption_verification", sampling, set())
    assert first.keys == again.keys and len(first.keys) == 9
    assert all(v["chosen"] >= 1 for v in first.strata.values())  # 6 strata, all covered
    assert {k.split("|")[1] for k in first.strata} == {"real", "synthetic"}
    other = select(corpus, "caption_verification", {**sampling, "seed": 1}, set())
    assert other.keys != first.keys
    rest = select(corpus, "caption_verification", {**sampling, "count": 100}, set(first.keys))
    assert not set(rest.keys) & set(first.keys) and len(rest.keys) == 15
    assert rest.skipped["reviewed_earlier"] == 9
    buckets = select(corpus, "match_rating", {**sampling, "stratify": ["score_bucket"], "score": "clip",
                                              "score_buckets": [0.2, 0.4]}, set())
    assert set(buckets.strata) == {"<0.2", "0.2-0.4", ">=0.4"}


def test_state_reviewed_keys_and_salted_ids(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "state")
    store.save({"format": "rsdata-annotation-round/1", "round": "a", "sample_keys": ["k1", "k2", "k3"],
                "pulls": [{"reviewed_keys": ["k1"]}]})
    store.save({"format": "rsdata-annotation-round/1", "round": "b", "sample_keys": ["k4"], "pulls": []})
    assert store.reviewed_keys() == {"k1", "k4"}  # pulled: answered keys; in progress: all
    assert store.reviewed_keys(except_round="b") == {"k1"}
    salt = store.salt()
    assert store.salt() == salt and (tmp_path / "state" / "annotator_salt").stat().st_mode & 0o077 == 0
    a = annotator_id(salt, "http://x", 3)
    assert a == annotator_id(salt, "http://x/", 3) and a != annotator_id(salt, "http://x", 4)
    assert a != annotator_id(b"other salt", "http://x", 3) and a.startswith("a-") and len(a) == 18


# -- majority rules -------------------------------------------------------------------------------


def meta(caption: str = "Two buildings.") -> dict[str, Any]:
    return {"captions": [{"text": caption, "kind": "template", "template": "t"},
                         {"text": "Other.", "kind": "template", "template": "u"}], "scores": {},
            "osm": {"tags": [{"tag": "building=yes"}, {"tag": "highway=track"}]}}


def ans(who: str, verdict: str, caption: str | None = None, t: str = "2026-01-01T00:00:00Z",
        reason: str | None = None) -> dict[str, Any]:
    return {"annotator": who, "time": t, "verdict": verdict, "caption": caption, "reason": reason}


def test_caption_majority_ties_and_invalid_edits() -> None:
    m = meta()
    d = resolve_captions(m, {"answers": [ans("a", "accept"), ans("b", "reject")]}, ANSWERS, SETTINGS)
    assert d.drop is None and d.record["resolution"] == "tie" and m == meta()
    d = resolve_captions(meta(), {"answers": [ans("a", "accept"), ans("b", "reject")]}, ANSWERS,
                         HumanMergeSettings("x", 100, 1, "drop"))
    assert d.drop == "human_tie"
    d = resolve_captions(meta(), {"answers": [ans("a", "reject", reason="artefact"), ans("b", "reject"),
                                              ans("c", "accept")]}, ANSWERS, SETTINGS)
    assert d.drop == "human_rejected" and d.counters["reject_reason:artefact"] == 1
    m = meta()
    d = resolve_captions(m, {"answers": [ans("a", "edit", ""), ans("b", "edit", "x" * 10_000),
                                         ans("c", "edit", "  ")]}, ANSWERS, SETTINGS)
    assert d.record["resolution"] == "too_few_answers" and m == meta()
    assert d.counters["invalid_answer:empty_caption"] == 2
    assert d.counters["invalid_answer:caption_too_long"] == 1
    d = resolve_captions(meta(), {"answers": [ans("a", "edit", " Two  buildings. "), ans("b", "accept")]},
                         ANSWERS, SETTINGS)
    assert d.record["resolution"] == "accepted"  # an edit that changes nothing is an accept
    d = resolve_captions(meta(), {"answers": [ans("a", "edit", "A road."), ans("b", "accept")]}, ANSWERS,
                         SETTINGS)
    assert d.record["resolution"] == "tie_accept_edit"


def test_edited_captions_become_human_captions_with_provenance() -> None:
    m = meta()
    answers = [ans("a", "edit", "A farm\ntrack.", "2026-01-01T00:00:02Z"),
               ans("b", "edit", "Two houses.", "2026-01-01T00:00:01Z"),
               ans("c", "edit", "A farm track.", "2026-01-01T00:00:03Z")]
    d = resolve_captions(m, {"answers": answers}, ANSWERS, SETTINGS)
    assert d.record["resolution"] == "edited" and d.counters["human_captions"] == 2
    first, second = m["captions"][:2]
    assert first == {"text": "A farm track.", "kind": "human", "round": "r1", "project": 7,
                     "annotators": ["a", "c"], "time": "2026-01-01T00:00:03Z", "votes": 2}
    assert second["text"] == "Two houses." and m["captions"][2]["text"] == "Other."
    assert d.record["superseded_caption"]["text"] == "Two buildings."
    assert d.record["annotators"] == ["a", "b", "c"]


def test_ratings_and_tag_checks() -> None:
    m = meta()
    d = resolve_rating(m, {"answers": [{"annotator": "a", "time": "t", "rating": 4},
                                       {"annotator": "b", "time": "t", "rating": 2},
                                       {"annotator": "c", "time": "t", "rating": None}]}, ANSWERS, SETTINGS)
    assert m["scores"]["human_match"] == 3.0 and d.record["ratings"] == [4, 2]
    assert d.counters["invalid_answer:no_rating"] == 1
    m = meta()
    entry = {"options": ["building=yes", "highway=track"],
             "answers": [{"annotator": "a", "time": "t", "tags": ["building=yes", "highway=track"]},
                         {"annotator": "b", "time": "t", "tags": ["building=yes"]}]}
    d = resolve_tags(m, entry, ANSWERS, SETTINGS)
    assert d.record["tags"]["building=yes"] == {"visible": 2, "not_visible": 0, "decision": True}
    assert d.record["tags"]["highway=track"]["decision"] is None  # a tie is kept out
    assert m["osm"]["tags"][0]["human_visible"] is True and "human_visible" not in m["osm"]["tags"][1]


# -- agreement ------------------------------------------------------------------------------------


def test_agreement_matches_krippendorff_on_reliability_data() -> None:
    krippendorff = pytest.importorskip("krippendorff", reason="the annotate extra is not installed")

    verdicts = [("accept", "accept"), ("edit", "edit"), ("reject", "reject"), ("accept", "reject"),
                ("edit", "accept")]
    tasks = {f"k{i}": {"answers": [{"annotator": "a", "verdict": x}, {"annotator": "b", "verdict": y}]}
             for i, (x, y) in enumerate(verdicts)}
    figs = answers_mod.agreement("caption_verification", tasks)
    code = {"accept": 0, "edit": 1, "reject": 2}
    data = np.array([[code[x] for x, _ in verdicts], [code[y] for _, y in verdicts]], dtype=float)
    expect = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert figs["verdict"]["alpha"] == pytest.approx(expect, abs=1e-4)
    assert figs["verdict"]["units"] == 5 and figs["verdict"]["percent_agreement"] == 0.6
    ratings = {f"k{i}": {"answers": [{"rating": r} for r in pair]}
               for i, pair in enumerate([(1, 2), (5, 5), (3, 4), (2, 2)])}
    rating = answers_mod.agreement("match_rating", ratings)["rating"]
    data = np.array([[1, 5, 3, 2], [2, 5, 4, 2]], dtype=float)
    assert rating["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=data, value_domain=[1, 2, 3, 4, 5],
                           level_of_measurement="ordinal"), abs=1e-4)
    same = answers_mod.agreement("caption_verification", {
        "k": {"answers": [{"verdict": "accept"}, {"verdict": "accept"}]}})
    assert same["verdict"]["alpha"] is None and "undefined" in same["verdict"]["note"]


# -- the merge, as an ordinary run ----------------------------------------------------------------


def answers_file(corpus: Corpus, tasks: dict[str, Any], kind: str = "caption_verification") -> dict[str, Any]:
    return {"format": answers_mod.ANSWERS_FORMAT, "round": "r1", "kind": kind, "project": 7,
            "server": "http://x", "config_sha256": "0" * 64, "overlap": 2,
            "corpus": {"name": corpus.name, "manifest_sha256": corpus.manifest_sha256(),
                       "recipe_hash": corpus.manifest["recipe_hash"]},
            "reject_reasons": [], "counts": {}, "agreement": {}, "tasks": tasks}


def run_merge(parent: Path, out: Path, answers: dict[str, Any]) -> dict[str, Any]:
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    out.mkdir(parents=True, exist_ok=True)
    (out / "answers.json").write_bytes(answers_mod.encode(answers))
    recipe = parse_recipe({"version": 1, "name": "merged",
                           "source": {"type": "corpus", "path": str(parent)},
                           "stages": [{"type": "human_merge", "answers": "answers.json"}],
                           "output": {"dir": str(out), "max_samples_per_shard": 4}}, base_dir=out)
    return run_local(build_plan(recipe, out), progress=False).manifest


def test_merge_run_keeps_parent_and_counts_by_reason(tmp_path: Path) -> None:
    parent_dir = write_annotation_corpus(tmp_path / "parent", n=8, size=32)
    before = {p.name: p.read_bytes() for p in (parent_dir / "shards").iterdir()}
    parent = Corpus(parent_dir)
    tasks = {"s_0000": {"tasks": [1], "answers": [ans("a", "reject"), ans("b", "reject")]},
             "s_0001": {"tasks": [2], "answers": [ans("a", "edit", "A dirt track."), ans("b", "edit", "A dirt track.")]},
             "s_0002": {"tasks": [3], "answers": []}}
    manifest = run_merge(parent_dir, tmp_path / "out", answers_file(parent, tasks))
    assert manifest["nsamples"] == 7 and manifest["parent"]["manifest_sha256"] == parent.manifest_sha256()
    stage = next(s for s in manifest["stages"] if s["name"] == "human_merge")
    assert stage["dropped"] == {"human_rejected": 1}
    assert stage["counters"]["no_answers"] == 1 and stage["counters"]["not_in_round"] == 5
    samples = {s.key: s for s in Corpus(tmp_path / "out").samples()}
    assert "s_0000" not in samples and samples["s_0001"].caption == "A dirt track."
    assert samples["s_0001"].meta["captions"][0]["kind"] == "human"
    assert "annotation" not in samples["s_0002"].meta
    for s in samples.values():
        assert not schemas.errors("sample", s.meta)
    assert {p.name: p.read_bytes() for p in (parent_dir / "shards").iterdir()} == before
    # the same answers again: every partition is done already
    again = run_merge(parent_dir, tmp_path / "out", answers_file(parent, tasks))
    assert again["recipe_hash"] == manifest["recipe_hash"] and again["nsamples"] == 7


def test_merge_refuses_answers_of_another_corpus_version(tmp_path: Path) -> None:
    parent_dir = write_annotation_corpus(tmp_path / "parent", n=3, size=32)
    answers = answers_file(Corpus(parent_dir), {})
    answers["corpus"]["manifest_sha256"] = "f" * 64
    with pytest.raises(RsdataError, match="answers of round r1 were given on version ffffffffffff"):
        run_merge(parent_dir, tmp_path / "out", answers)


def test_load_answers_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"format": "nope"}')
    with pytest.raises(InputError, match="not an rsdata answers file"):
        answers_mod.load_answers(tmp_path / "a.json")


# -- server errors without a server ---------------------------------------------------------------


def test_credentials_come_from_options_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(UsageError, match="LABEL_STUDIO_URL"):
        credentials(None, "t")
    with pytest.raises(UsageError, match="LABEL_STUDIO_API_KEY"):
        credentials("http://h:1", None)
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://h:1/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret")
    assert credentials(None, None) == ("http://h:1", "secret")
    assert credentials("http://o:2", "tok") == ("http://o:2", "tok")


def test_server_down_is_a_clear_error_without_the_token() -> None:
    pytest.importorskip("label_studio_sdk", reason="the annotate extra is not installed")
    from rsdata.annotation.localserver import free_port

    token = "f" * 40
    url = f"http://127.0.0.1:{free_port()}"
    server = LabelStudioServer(url, token, timeout=5)
    with pytest.raises(RsdataError) as err:
        server.whoami()
    assert url in str(err.value) and "is running" in str(err.value) and token not in str(err.value)
