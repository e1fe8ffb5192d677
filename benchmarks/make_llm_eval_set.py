"""Generate an unlabelled evaluation set of LLM captions (the answers, frozen before labelling).

    python -m benchmarks.make_llm_eval_set --corpus NAME=DIR:SETTINGS [...] --out PATH

Each ``--corpus`` is a finished ``rsdata run`` output (its samples' json must keep
``osm.objects``, as any run with ``template_captions`` does) and the settings its tiles are
asked with, ``style/temperature/seed`` joined by ``+`` (e.g. ``short/0.7/31+detailed/0.8/32``);
``--every K`` keeps every K-th sample of a corpus (``--every`` applies to all). Every answer of
the embedded SmolLM2 model is cleaned as the ``llm_caption`` stage cleans it and stored with the
prompt's facts, the tile's statistics and objects (what a relation check needs), and the
verdict of the validator of this moment (``validator_before``, with a hash of the validator's
source). Labels (``faithful_stats``, ``unsupported``, ``faithful_picture``, ``picture_note``)
are added by hand afterwards; the header records when the answers were generated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEEP_ATTRS = ("roof:material", "building:levels", "surface", "leaf_type", "crop", "name", "ref",
              "tunnel", "covered", "layer", "location")


def validator_sha() -> str:
    h = hashlib.sha256()
    for name in ("validator.py", "lexicon.py", "facts.py", "prompts.py"):
        h.update((ROOT / "rsdata" / "llm" / name).read_bytes())
    return h.hexdigest()[:16]


def compact_object(o: dict[str, Any]) -> dict[str, Any]:
    """An ``osm.objects`` entry with what the checks read (pixels rounded to 0.1 px)."""
    def r(v: Any) -> Any:
        return [r(x) for x in v] if isinstance(v, list) else round(float(v), 1)

    attrs = {k: v for k, v in (o.get("attrs") or {}).items() if k in KEEP_ATTRS and v not in ("", None)}
    keep = {k: o[k] for k in ("id", "tag", "tags", "category", "geom", "cell", "visible", "touches_edge",
                              "length_px", "area_px") if k in o}
    return {**keep, "attrs": attrs, "pixels": r(o.get("pixels") or [])}


def tile_of(meta: dict[str, Any]) -> dict[str, Any]:
    osm = meta.get("osm") or {}
    return {"key": meta["key"], "geo": meta["geo"],
            "osm": {"n_features": osm.get("n_features", 0), "tags": osm.get("tags", []),
                    "coverage": osm.get("coverage"),
                    "objects": [compact_object(o) for o in osm.get("objects") or []]}}


def corpus_samples(path: Path, every: int) -> list[dict[str, Any]]:
    from rsdata.corpus.samples import list_shards, read_shard

    metas = [json.loads(s["json"]) for sh in list_shards([path]) for s in read_shard(sh)]
    metas.sort(key=lambda m: m["key"])
    return metas[::every]


def main(argv: list[str] | None = None) -> int:
    from rsdata.llm.backends import EMBEDDED_MODEL, GenRequest, make_backend
    from rsdata.llm.facts import build_facts
    from rsdata.llm.prompts import PROMPT_VERSION, STYLES, build_prompt
    from rsdata.llm.stage import clean_answer
    from rsdata.llm.validator import Limits, Validator

    ap = argparse.ArgumentParser(prog="make_llm_eval_set", description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", action="append", required=True, help="NAME=DIR:style/T/seed+...")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--id-prefix", default="fresh2")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    validator, sha = Validator(), validator_sha()  # the sources as imported, before any edit
    backend = make_backend({"batch_size": 8})
    backend.check()
    rows: list[dict[str, Any]] = []
    plan = []
    for spec in args.corpus:
        name, rest = spec.split("=", 1)
        path, settings = rest.rsplit(":", 1)
        for meta in corpus_samples(Path(path), args.every):
            facts = build_facts(meta)
            if not facts:
                continue
            for setting in settings.split("+"):
                style, temp, seed = setting.split("/")
                plan.append((name, meta, facts, style, float(temp), int(seed)))
    reqs = [GenRequest(build_prompt(f, st), STYLES[st].max_new_tokens, t, args.top_p, sd)
            for _, _, f, st, t, sd in plan]
    answers = backend.generate(reqs)
    for i, ((name, meta, facts, style, temp, seed), req, raw) in enumerate(zip(plan, reqs, answers)):
        st = STYLES[style]
        limits = Limits(st.max_words, st.max_sentences, 0.75)
        text = clean_answer(raw, req.prompt)
        v = validator.validate(text, meta["osm"]["tags"], [f.tag for f in facts], limits,
                               prefill=req.prompt.prefill, geo=meta.get("geo"))
        rows.append({
            "id": f"{args.id_prefix}-{i:03d}", "key": meta["key"], "scene": name,
            "prompt_version": PROMPT_VERSION, "style": style, "temperature": temp,
            "top_p": args.top_p, "seed": seed, "model": EMBEDDED_MODEL, "prefill": req.prompt.prefill,
            "limits": {"max_words": st.max_words, "max_sentences": st.max_sentences, "min_coverage": 0.75},
            "facts": [f.tag for f in facts], "fact_phrases": [f.text for f in facts],
            "tile": tile_of(meta), "raw_answer": raw, "caption": text,
            "validator_before": {"ok": v.ok, "reasons": v.reasons, "coverage": round(v.coverage, 3),
                                 "validator_sha": sha},
        })
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    header = {"_header": True, "what": "second fresh, frozen evaluation set of LLM captions (issue 15)",
              "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "git_commit": commit, "validator_sha_before": sha, "model": EMBEDDED_MODEL,
              "prompt_version": PROMPT_VERSION, "generation_seconds": round(time.perf_counter() - started, 1),
              "n": len(rows), "corpora": args.corpus, "top_p": args.top_p,
              "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in [header, *rows]), encoding="utf-8")
    tmp.replace(args.out)
    print(f"{len(rows)} answers -> {args.out} ({header['generation_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
