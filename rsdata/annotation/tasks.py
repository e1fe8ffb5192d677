"""What a Label Studio task shows, built from one corpus sample.

Every task carries ``rsdata_key`` (the sample key), ``rsdata_round`` and
``rsdata_manifest_sha256`` (the corpus version), which a pull checks, and the fields a config
may show (:data:`rsdata.annotation.template.TASK_FIELDS`):

* ``image`` — the uploaded rendering (``/data/upload/...``);
* ``caption`` / ``caption_kind`` — the primary caption and its kind (template, llm, ...);
* ``tags`` — the OSM tag summary: one line per visible tag, "phrase (key=value): N visible,
  position"; tags mapped but too small to see are listed after "not visible at this resolution";
* ``layout_html`` — for synthetic samples that carry a ``layout.png`` member, the layout image
  (uploaded like the rendering); otherwise a one-line note;
* ``tag_options`` — the tag check's choices, one per tag of the sample, "phrase (key=value)";
* ``sample_info`` — key, origin, ground sampling distance.
"""

from __future__ import annotations

import html
from typing import Any

from rsdata.annotation.sampling import origin_of

LAYOUT_MEMBER = "layout.png"
MAX_TAG_OPTIONS = 30


def tag_label(tag: dict[str, Any]) -> str:
    phrase = str(tag.get("phrase") or tag["tag"])
    return f"{phrase} ({tag['tag']})"


def tag_summary(meta: dict[str, Any]) -> str:
    tags = [t for t in (meta.get("osm") or {}).get("tags", []) if t.get("tag")]
    if not tags:
        return "Nothing from OpenStreetMap in this tile."
    lines = []
    for t in tags:
        if not t.get("visible"):
            continue
        count = t.get("visible_count")
        geom = t.get("geom_types") or {}
        what = f"{count} visible" if count and geom.get("polygon") and not t.get("mass") else "visible"
        if t.get("length_m"):
            what += f", {float(t['length_m']):.0f} m"
        lines.append(f"{tag_label(t)}: {what}, {t.get('position', '?')}")
    hidden = [tag_label(t) for t in tags if not t.get("visible")]
    if hidden:
        lines.append("Mapped but not visible at this resolution: " + ", ".join(hidden))
    return "\n".join(lines) or "Nothing from OpenStreetMap is visible in this tile."


def tag_options(meta: dict[str, Any]) -> list[dict[str, str]]:
    """The tag check's choices: one per distinct tag (visible ones first), at most 30."""
    tags = [t for t in (meta.get("osm") or {}).get("tags", []) if t.get("tag")]
    tags.sort(key=lambda t: (not t.get("visible"), str(t["tag"])))
    seen: set[str] = set()
    options = []
    for t in tags:
        if t["tag"] in seen:
            continue
        seen.add(t["tag"])
        options.append({"value": tag_label(t)})
    return options[:MAX_TAG_OPTIONS]


def option_tags(data: dict[str, Any]) -> dict[str, str]:
    """Choice label -> tag, from a task's data (the inverse of :func:`tag_options`)."""
    out = {}
    for option in data.get("tag_options") or []:
        label = str(option.get("value", "")) if isinstance(option, dict) else str(option)
        if label.endswith(")") and " (" in label:
            out[label] = label[label.rindex(" (") + 2:-1]
    return out


def sample_info(meta: dict[str, Any]) -> str:
    geo = meta.get("geo") or {}
    gsd = geo.get("gsd_m")
    parts = [f"sample {meta.get('key')}", origin_of(meta)]
    if isinstance(gsd, (int, float)):
        parts.append(f"{gsd:g} m per pixel")
    return " | ".join(parts)


def task_data(key: str, meta: dict[str, Any], image_url: str, layout_url: str | None,
              round_id: str, manifest_sha256: str) -> dict[str, Any]:
    captions = meta.get("captions") or []
    primary = captions[0] if captions else {}
    if layout_url:
        layout = (f'<p><b>Layout this synthetic image was generated from:</b></p>'
                  f'<img src="{html.escape(layout_url, quote=True)}" alt="layout" style="max-width: 256px"/>')
    elif origin_of(meta) == "synthetic":
        layout = "<p>Synthetic image (no layout stored with it).</p>"
    else:
        layout = "<p>Real image: no layout.</p>"
    return {
        "image": image_url,
        "caption": str(primary.get("text", "")),
        "caption_kind": str(primary.get("kind", "")),
        "tags": tag_summary(meta),
        "layout_html": layout,
        "tag_options": tag_options(meta),
        "sample_info": sample_info(meta),
        "rsdata_key": key,
        "rsdata_round": round_id,
        "rsdata_manifest_sha256": manifest_sha256,
    }
