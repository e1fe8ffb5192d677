"""Remote inputs: refused unless a recipe allows them, then fetched once into a local cache.

A recipe that names ``http(s)://`` inputs must say ``allow_remote: true``: a recipe from
someone else should not make rsdata reach out to arbitrary servers. Allowed inputs are
downloaded once (atomically) into ``$RSDATA_CACHE`` (default ``~/.cache/rsdata/inputs``) and
then hashed and read like local files, so checksums and resume work the same.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from rsdata.errors import InputError, RecipeError

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
FETCHABLE = ("http", "https")
TIMEOUT_S = 60


def is_url(text: str) -> bool:
    return bool(URL.match(text))


def cache_dir() -> Path:
    return Path(os.environ.get("RSDATA_CACHE", Path.home() / ".cache" / "rsdata")) / "inputs"


def fetch(url: str, allow_remote: bool) -> Path:
    """The local copy of ``url`` (downloaded on first use)."""
    if not allow_remote:
        raise RecipeError(f"the recipe names a remote input ({url}); rsdata does not fetch remote "
                          "inputs unless the recipe says allow_remote: true at its top level")
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in FETCHABLE:
        raise RecipeError(f"cannot fetch {url}: only {', '.join(FETCHABLE)} URLs are supported; "
                          "download the file and give its local path")
    name = Path(urllib.parse.urlparse(url).path).name or "input"
    target = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:24] / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.tmp{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh, length=1 << 20)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot download {url}: {exc}. Check the URL and the network, or "
                         "download it yourself and give the local path.") from None
    return target


def resolve_input(path: str, base_dir: Path, allow_remote: bool) -> Path:
    """An input of a recipe as a local path: relative paths are relative to the recipe."""
    if is_url(path):
        return fetch(path, allow_remote)
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()
