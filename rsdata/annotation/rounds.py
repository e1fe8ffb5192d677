"""``rsdata annotate push | status | pull``: a round from a corpus to Label Studio and back.

**push** samples the corpus (:mod:`rsdata.annotation.sampling`), records the round
(:mod:`rsdata.annotation.state`) *before* touching the server, then creates or reuses the round's
project (found again by a marker in its description, so a push killed right after creating it
does not create a second one), lists the tasks already there (paginated) and imports only the
missing sample keys, in batches: images first (uploads are reused by name), then the tasks.
A second push adds nothing; a push interrupted anywhere (server killed, network cut, Ctrl-C)
resumes where the server's own task list says it stopped, without duplicates.

**status** reads each round's project: tasks, tasks with answers, tasks with all ``overlap``
answers, skipped answers, annotators and the agreement so far (task list, page by page).

**pull** exports every annotation through an export snapshot, writes the answers file with
its agreement figures into ``OUT/annotation/``, and runs ``{source: {type: corpus, path:
PARENT}, stages: [{type: human_merge, answers: ...}]}`` into ``OUT`` with the ordinary executor:
markers, resume, stats by reason, ``parent`` in the manifest; the parent is only read.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rsdata.annotation.sampling import select
from rsdata.annotation.server import LabelStudioServer
from rsdata.annotation.state import RoundStore, new_record, now
from rsdata.annotation.tasks import LAYOUT_MEMBER, task_data
from rsdata.annotation.template import RoundTemplate, load_round, reject_reasons
from rsdata.corpus.reader import Corpus
from rsdata.errors import InputError

BATCH = 100
IMAGE_MIME = {"jpg": "image/jpeg", "png": "image/png"}


def round_marker(round_id: str, manifest_sha256: str) -> str:
    return f"rsdata-round:{round_id}:{manifest_sha256[:16]}"


def media_marker(round_id: str, manifest_sha256: str) -> str:
    return f"rsdata-media:{round_id}:{manifest_sha256[:16]}"


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


@dataclass
class PushResult:
    round: str
    project: int
    media_project: int
    sample_keys: int
    already: int
    imported: int
    images_uploaded: int
    duplicates: int
    seconds: float
    strata: dict[str, Any] = field(default_factory=dict)

    def summary(self, url: str) -> str:
        lines = [f"round {self.round}: project {self.project} on {url} holds "
                 f"{self.already + self.imported} of {self.sample_keys} tasks "
                 f"({self.imported} imported now, {self.already} were there already; "
                 f"{self.images_uploaded} images uploaded)"]
        if self.duplicates:
            lines.append(f"warning: {self.duplicates} sample keys have more than one task in the project "
                         "(added outside rsdata?); pull counts each answer once per task")
        lines.append(f"annotate at {url}/projects/{self.project}/data ; then: rsdata annotate status, "
                     f"rsdata annotate pull")
        lines.append(f"{self.seconds:.1f} s")
        return "\n".join(lines)


def _check_record(record: dict[str, Any], template: RoundTemplate, sha: str, url: str,
                  store: RoundStore) -> None:
    where = store.path(template.id)
    if record["corpus"]["manifest_sha256"] != sha:
        raise InputError(
            f"round {template.id} was pushed from corpus version {record['corpus']['manifest_sha256'][:12]} "
            f"({record['corpus']['name']}, {record['corpus']['path']}), not from this one ({sha[:12]}). "
            "A round belongs to one corpus version: give this round a new id in the template, or push "
            f"from that version (its record: {where})")
    if record["config_sha256"] != template.config_sha256:
        raise InputError(
            f"the labeling config {template.config_path} changed since round {template.id} was pushed; "
            "annotators already work with the old one. Restore it, or give the round a new id")
    if record["kind"] != template.kind:
        raise InputError(f"round {template.id} was pushed as {record['kind']}, the template now says "
                         f"{template.kind}; give the round a new id")
    if record["server"].rstrip("/") != url.rstrip("/"):
        raise InputError(f"round {template.id} was pushed to {record['server']}, not {url}: give that "
                         "--url (project ids belong to one server), or a new round id")


def _project(server: LabelStudioServer, record: dict[str, Any], field_name: str, marker: str,
             create: Callable[[], int], store: RoundStore) -> int:
    pid = record.get(field_name)
    if pid is not None:
        if not server.project_exists(pid):
            raise InputError(
                f"project {pid} of round {record['round']} no longer exists on {server.url}. To start "
                f"the round afresh, delete its record {store.path(record['round'])} and push again")
        return int(pid)
    pid = server.find_project(marker)  # a push killed after creating it, before recording it
    if pid is None:
        pid = create()
    record[field_name] = pid
    store.save(record)
    return pid


def _entries(corpus: Corpus, keys: set[str]) -> Iterator[Any]:
    for entry in corpus.entries(members={"jpg", "png", "json", LAYOUT_MEMBER}):
        if entry.key in keys:
            yield entry


def push(corpus_dir: str | Path, template_path: str | Path, url: str, token: str,
         state_dir: str | Path | None = None, batch_size: int = BATCH, quiet: bool = False,
         server: LabelStudioServer | None = None) -> PushResult:
    started = time.perf_counter()
    template = load_round(template_path)
    corpus = Corpus(corpus_dir, verify=True)
    sha = corpus.manifest_sha256()
    store = RoundStore(state_dir)
    own = server is None
    server = server or LabelStudioServer(url, token)
    try:
        server.whoami()  # a wrong URL or token fails here, before anything is recorded
        with store.lock():
            record = store.load(template.id)
            if record is not None and record.get("project") is None and record["corpus"][
                    "manifest_sha256"] == sha:
                record = None  # no project was made (e.g. the config was rejected): start afresh
            if record is not None:
                _check_record(record, template, sha, server.url, store)
            else:
                exclude = store.reviewed_keys(template.id) if template.sampling["exclude_reviewed"] else set()
                selection = select(corpus, template.kind, template.sampling, exclude)
                if not selection.keys:
                    raise InputError(
                        f"round {template.id}: no sample of {corpus.dir} can go into it "
                        f"({', '.join(f'{k}: {v}' for k, v in selection.skipped.items()) or 'empty corpus'})")
                record = new_record(template, corpus, sha, server.url, selection.keys, selection.report())
                store.save(record)
                _say(quiet, f"round {template.id}: {len(selection.keys)} samples chosen from "
                            f"{corpus.nsamples} ({len(selection.strata)} strata) -> {store.path(template.id)}")
            description = (f"rsdata annotation round {template.id} ({template.kind}) of corpus "
                           f"{corpus.name}, manifest {sha[:12]}. {round_marker(template.id, sha)}")
            pid = _project(server, record, "project", round_marker(template.id, sha),
                           lambda: server.create_project(template.title, description, template.config_xml,
                                                         template.overlap, template.instructions,
                                                         str(template.config_path)), store)
            media = _project(server, record, "media_project", media_marker(template.id, sha),
                             lambda: server.create_project(
                                 f"rsdata media {template.id}"[:50],
                                 f"Images of rsdata round {template.id} (files only, no tasks: annotate "
                                 f"in project {pid}). {media_marker(template.id, sha)}",
                                 _media_config(), 1, "", "(rsdata media project)"), store)
            existing: dict[str, int] = {}
            duplicates = 0
            for task in server.tasks(pid):
                key = task["data"].get("rsdata_key")
                if isinstance(key, str):
                    duplicates += key in existing
                    existing.setdefault(key, task["id"])
            wanted = record["sample_keys"]
            todo = [k for k in wanted if k not in existing]
            already = len(wanted) - len(todo)
            imported = uploaded = 0
            if todo:
                if already:
                    _say(quiet, f"round {template.id}: resuming, {already} tasks are in project {pid} already")
                have = server.uploads(media)
                batch: list[Any] = []
                for entry in _entries(corpus, set(todo)):
                    batch.append(entry)
                    if len(batch) >= batch_size:
                        n, u = _push_batch(server, pid, media, batch, have, template, sha)
                        imported, uploaded = imported + n, uploaded + u
                        _say(quiet, f"  {already + imported}/{len(wanted)} tasks")
                        batch = []
                if batch:
                    n, u = _push_batch(server, pid, media, batch, have, template, sha)
                    imported, uploaded = imported + n, uploaded + u
            record["push"].update({"status": "complete", "tasks": already + imported, "finished": now()})
            store.save(record)
        return PushResult(template.id, pid, media, len(wanted), already, imported, uploaded, duplicates,
                          time.perf_counter() - started, record.get("strata", {}))
    finally:
        if own:
            server.close()


def _media_config() -> str:
    from rsdata.annotation.server import MEDIA_CONFIG

    return MEDIA_CONFIG


def _push_batch(server: LabelStudioServer, pid: int, media: int, batch: list[Any], have: dict[str, str],
                template: RoundTemplate, sha: str) -> tuple[int, int]:
    files: list[tuple[str, bytes, str]] = []
    for entry in batch:
        fmt = next(f for f in ("jpg", "png") if f in entry.members)
        name = f"{entry.key}.{fmt}"
        if name not in have:
            files.append((name, entry.members[fmt], IMAGE_MIME[fmt]))
        if LAYOUT_MEMBER in entry.members and f"{entry.key}.{LAYOUT_MEMBER}" not in have:
            files.append((f"{entry.key}.{LAYOUT_MEMBER}", entry.members[LAYOUT_MEMBER], "image/png"))
    have.update(server.upload(media, files))
    tasks = []
    for entry in batch:
        fmt = next(f for f in ("jpg", "png") if f in entry.members)
        layout = have.get(f"{entry.key}.{LAYOUT_MEMBER}") if LAYOUT_MEMBER in entry.members else None
        tasks.append({"data": task_data(entry.key, entry.meta(), have[f"{entry.key}.{fmt}"], layout,
                                        template.id, sha)})
    return server.import_tasks(pid, tasks), len(files)


# -- status -------------------------------------------------------------------------------------


def round_status(server: LabelStudioServer, record: dict[str, Any], salt: bytes) -> dict[str, Any]:
    """Tasks, answers, annotators and agreement so far of one pushed round."""
    from rsdata.annotation.answers import agreement, collect

    pid = record["project"]
    project = server.project(pid)
    tasks = list(server.tasks(pid, annotations=True))
    answers, counts = collect(record["kind"], tasks, record, salt)
    overlap = int(record.get("overlap") or project.get("maximum_annotations") or 1)
    return {
        "round": record["round"], "kind": record["kind"], "project": pid, "server": record["server"],
        "corpus": record["corpus"]["name"], "corpus_manifest": record["corpus"]["manifest_sha256"][:12],
        "sample_keys": len(record["sample_keys"]), "tasks": counts["tasks"],
        "push": record["push"]["status"],
        "with_answers": sum(1 for e in answers.values() if e["answers"]),
        "completed": sum(1 for e in answers.values() if len(e["answers"]) >= overlap),
        "overlap": overlap, "answers": counts["answers"],
        "skipped": counts["cancelled_answers"], "annotators": counts["annotators"],
        "skipped_tasks": {k: counts[k] for k in ("skipped_unknown_key", "skipped_other_corpus_version")
                          if counts[k]},
        "agreement": agreement(record["kind"], answers),
        "pulls": len(record.get("pulls", [])),
    }


def status(url: str, token: str, state_dir: str | Path | None = None,
           template_path: str | Path | None = None,
           server: LabelStudioServer | None = None) -> list[dict[str, Any]]:
    store = RoundStore(state_dir)
    if template_path is not None:
        template = load_round(template_path)
        record = store.load(template.id)
        if record is None:
            raise InputError(f"round {template.id} has no record in {store.rounds_dir}: push it first "
                             "(rsdata annotate push CORPUS --round ...), or give its --state")
        records = [record]
    else:
        records = store.records()
        if not records:
            raise InputError(f"no round records in {store.rounds_dir}: push a round first, or give --state")
    own = server is None
    server = server or LabelStudioServer(url, token)
    try:
        server.whoami()
        salt = store.salt()
        out = []
        for record in records:
            if record.get("project") is None:
                out.append({"round": record["round"], "kind": record["kind"], "push": "not pushed"})
            elif record["server"].rstrip("/") != server.url:
                out.append({"round": record["round"], "kind": record["kind"],
                            "push": f"on another server ({record['server']})"})
            else:
                out.append(round_status(server, record, salt))
        return out
    finally:
        if own:
            server.close()


def format_agreement(agreement: dict[str, Any]) -> str:
    parts = []
    for name, fig in agreement.items():
        alpha = "n/a" if fig.get("alpha") is None else f"{fig['alpha']:.3f}"
        pct = "n/a" if fig.get("percent_agreement") is None else f"{100 * fig['percent_agreement']:.0f}%"
        parts.append(f"{name}: alpha {alpha} ({fig['level']}), {pct} agree, {fig['units']} units")
    return "; ".join(parts)


def format_status(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        if "tasks" not in r:
            lines.append(f"round {r['round']} ({r['kind']}): {r['push']}")
            continue
        lines.append(f"round {r['round']} ({r['kind']}), project {r['project']} on {r['server']}, corpus "
                     f"{r['corpus']} ({r['corpus_manifest']}), push {r['push']}")
        lines.append(f"  tasks {r['tasks']} (of {r['sample_keys']} sampled); with answers {r['with_answers']}; "
                     f"completed {r['completed']} (all {r['overlap']} answers); answers {r['answers']}; "
                     f"skipped {r['skipped']}; annotators {r['annotators']}")
        if r["skipped_tasks"]:
            lines.append("  not from this round: " + ", ".join(f"{k} {v}" for k, v in r["skipped_tasks"].items()))
        lines.append(f"  agreement so far: {format_agreement(r['agreement'])}")
        if r["pulls"]:
            lines.append(f"  pulled {r['pulls']} time(s)")
    return "\n".join(lines)


# -- pull ---------------------------------------------------------------------------------------


def merge_recipe(parent: Corpus, template: RoundTemplate, answers_rel: str, inputs_rel: str,
                 out_dir: Path) -> dict[str, Any]:
    """The recipe of the merge run (paths relative to ``out_dir``, the parent absolute)."""
    name = f"{parent.name}-{template.id}"
    name = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or template.id
    out = (parent.manifest.get("recipe") or {}).get("output") or {}
    output: dict[str, Any] = {"dir": str(out_dir)}
    for key in ("max_samples_per_shard", "max_bytes_per_shard"):
        if key in out:
            output[key] = out[key]
    return {"version": 1, "name": name,
            "description": f"answers of annotation round {template.id} merged into {parent.name}",
            "inputs": [inputs_rel],
            "source": {"type": "corpus", "path": str(Path(parent.dir).resolve())},
            "stages": [{"type": "human_merge", "answers": answers_rel, **template.answers}],
            "output": output}


def _clean_old_answers(out_dir: Path, keep: set[str]) -> None:
    folder = out_dir / "annotation"
    for path in folder.glob("answers-*"):
        if f"annotation/{path.name}" not in keep and path.is_file():
            path.unlink(missing_ok=True)


@dataclass
class PullResult:
    manifest: dict[str, Any]
    answers: dict[str, Any]
    answers_path: Path
    seconds: float
    run_summary: str


def pull(corpus_dir: str | Path, template_path: str | Path, out_dir: str | Path, url: str, token: str,
         state_dir: str | Path | None = None, overwrite: bool = False, workers: int = 1,
         quiet: bool = False, server: LabelStudioServer | None = None) -> PullResult:
    from rsdata.annotation.answers import build_answers, write_answers
    from rsdata.executors.common import summary
    from rsdata.executors.local import run_local
    from rsdata.lock import command_line, output_lock
    from rsdata.plan import build_plan
    from rsdata.recipe import parse_recipe

    started = time.perf_counter()
    template = load_round(template_path)
    store = RoundStore(state_dir)
    record = store.load(template.id)
    if record is None or record.get("project") is None:
        raise InputError(f"round {template.id} was never pushed from this state ({store.rounds_dir}): "
                         "push it first, or give the --state it was pushed with")
    parent = Corpus(corpus_dir, verify=True)
    sha = parent.manifest_sha256()
    if sha != record["corpus"]["manifest_sha256"]:
        raise InputError(
            f"round {template.id} was pushed from corpus version {record['corpus']['manifest_sha256'][:12]} "
            f"({record['corpus']['name']}, {record['corpus']['path']}), but {parent.dir} is version "
            f"{sha[:12]} ({parent.name}): its answers belong to that version. Pull into the corpus the "
            "round was pushed from")
    if record["kind"] != template.kind:
        raise InputError(f"round {template.id} was pushed as {record['kind']}, the template now says "
                         f"{template.kind}")
    out_dir = Path(out_dir)
    own = server is None
    server = server or LabelStudioServer(url, token)
    try:
        if record["server"].rstrip("/") != server.url:
            raise InputError(f"round {template.id} was pushed to {record['server']}, not {server.url}: "
                             "give that --url")
        server.whoami()
        with output_lock(out_dir, command_line()) as lock:
            export = server.export(record["project"], f"rsdata pull {template.id}")
            answers = build_answers(template, record, export, store.salt(), reject_reasons(template.config_xml))
            answers_rel, inputs_rel = write_answers(out_dir, answers, template.license, template.attribution)
            counts = answers["counts"]
            _say(quiet, f"round {template.id}: {counts.get('answers', 0)} answers on "
                        f"{counts.get('tasks_with_answers', 0)} of {len(record['sample_keys'])} tasks by "
                        f"{counts.get('annotators', 0)} annotators"
                        + "".join(f"; {k.replace('_', ' ')} {counts[k]}" for k in (
                            "cancelled_answers", "skipped_unknown_key", "skipped_other_corpus_version",
                            "duplicate_tasks") if counts.get(k)))
            recipe = parse_recipe(merge_recipe(parent, template, answers_rel, inputs_rel, out_dir),
                                  base_dir=out_dir.resolve(), what=f"the merge run of round {template.id}")
            plan = build_plan(recipe, out_dir, overwrite=overwrite)
            lock.check()
            result = run_local(plan, workers=workers, progress=not quiet)
            _clean_old_answers(out_dir, {answers_rel, inputs_rel})
    finally:
        if own:
            server.close()
    with store.lock():
        record = store.load(template.id) or record
        entry = {"out": str(out_dir.resolve()), "answers": answers_rel, "time": now(),
                 "nsamples": result.manifest["nsamples"], "counts": answers["counts"],
                 "reviewed_keys": sorted(k for k, e in answers["tasks"].items() if e["answers"])}
        record["pulls"] = [p for p in record.get("pulls", []) if p.get("out") != entry["out"]] + [entry]
        store.save(record)
    return PullResult(result.manifest, answers, out_dir / answers_rel, time.perf_counter() - started,
                      summary(result))
