"""A real Label Studio for the annotation tests: started once per session from its own virtualenv.

The server runs from ``.venv-ls`` (or ``$RSDATA_LABEL_STUDIO_VENV``) on 127.0.0.1 at a free port,
with a temporary data directory, a known admin user and a fixed API token. Without that
virtualenv the server tests are skipped with the reason, except under CI (``CI`` set), where
its absence is an error: ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from rsdata.annotation import localserver  # noqa: E402


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localserver.LocalLabelStudio]:
    venv = localserver.default_venv()
    if localserver.executable(venv) is None:
        message = (f"Label Studio is not installed in {venv} (python3.11 -m venv .venv-ls && "
                   f".venv-ls/bin/pip install label-studio=={localserver.LS_VERSION})")
        if _ci():
            pytest.fail(f"{message}; CI must have it (.ci/run installs it)")
        pytest.skip(message)
    server = localserver.start(tmp_path_factory.mktemp("label-studio"), venv=venv)
    print(f"\nLabel Studio {server.url} answered /health after {server.started_s:.0f} s", file=sys.stderr)
    try:
        yield server
    finally:
        server.stop()
