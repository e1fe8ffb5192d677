"""Annotation rounds on a Label Studio server: push a corpus sample, pull the answers, merge them.

    rsdata annotate push CORPUS --round annotation/rounds/caption_verification.yaml
    rsdata annotate status [--round ROUND.yaml]
    rsdata annotate pull CORPUS --round ROUND.yaml --out OUT

* :mod:`rsdata.annotation.template` — round templates (``annotation/rounds/*.yaml``, checked
  against ``schemas/annotation_round.schema.json``) and their labeling configs;
* :mod:`rsdata.annotation.sampling` — the stratified sample of a round;
* :mod:`rsdata.annotation.state` — round records (``STATE/rounds/<id>.json``) and hashed annotator ids;
* :mod:`rsdata.annotation.server` — the Label Studio client (``label-studio-sdk``): projects, image
  uploads, task import, paginated listing, snapshot exports; errors that never hold the token;
* :mod:`rsdata.annotation.answers` — exported annotations as answers, agreement (``krippendorff``);
* :mod:`rsdata.annotation.merge` — the ``human_merge`` stage (majority rules, provenance);
* :mod:`rsdata.annotation.rounds` — push, status and pull;
* :mod:`rsdata.annotation.report` — the ``inspect`` section of a merged corpus;
* :mod:`rsdata.annotation.localserver` — a throw-away Label Studio from ``.venv-ls`` (tests, benchmarks).

``label-studio-sdk`` and ``krippendorff`` are the optional extra ``annotate``; the merge stage and
the report need neither.
"""

from __future__ import annotations

KINDS = ("caption_verification", "match_rating", "tag_check")
