"""A full disk outside the shard writer (inspect's PNGs, a derived corpus's shards and manifest)
is a clear ``rsdata: error`` with exit 2 and nothing half-written left behind."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

from scoring_helpers import encode, scene
from scoring_helpers import write_corpus as write_items


def _limit(nbytes: int):  # noqa: ANN202
    def apply() -> None:
        # a real OS limit: writes past it fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def rsdata(*args: str, limit: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rsdata", *args], capture_output=True, text=True,
                          timeout=300, preexec_fn=_limit(limit))


def corpus(tmp_path: Path) -> Path:
    items = [(f"s{i:03d}", encode(scene(i, size=96)), f"caption {i}", {"q": i / 10}) for i in range(12)]
    return write_items(tmp_path / "c", items, max_samples_per_shard=4)


def test_inspect_with_a_full_disk(tmp_path: Path) -> None:
    src = corpus(tmp_path)
    out = tmp_path / "insp"
    proc = rsdata("inspect", str(src), "--out", str(out), limit=20_000)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "free some space" in proc.stderr.lower() or "disk is full" in proc.stderr
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_filter_with_a_full_disk_then_again(tmp_path: Path) -> None:
    src = corpus(tmp_path)
    out = tmp_path / "f"
    proc = rsdata("filter", str(src), "--out", str(out), "--threshold", "0.3", "--quiet", limit=30_000)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    # with space again the same command finishes
    again = subprocess.run([sys.executable, "-m", "rsdata", "filter", str(src), "--out", str(out),
                            "--threshold", "0.3", "--quiet"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (out / "manifest.json").exists()
