"""Training the dual encoder on tiny shards made in the test: loss, checkpoints, exact resume,
data splitting across ranks/workers, and bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from rsdata.cli import main as cli_main
from rsdata.errors import InputError
from rsdata.models import CheckpointMismatchError, load_checkpoint, read_checkpoint, register_config
from rsdata.models.preprocess import ImageTransform
from rsdata.models.tokenizer import HashedWordTokenizer
from rsdata.train import TrainConfig, TrainError, train
from rsdata.corpus.samples import SampleDataError, is_holdout, list_shards
from rsdata.train.stream import ShardStream, StreamConfig
from tiny_corpus import tiny_model_config, write_corpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train faster (and more steadily on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_config(tiny_model_config())
    register_config(tiny_model_config("tiny-test-wide") | {"embed_dim": 48})
    return write_corpus(tmp_path_factory.mktemp("tiny") / "corpus", n=48, per_shard=8)


def cfg(corpus: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(data=[str(corpus)], out=str(out), model="tiny-test", steps=8, batch_size=8,
                                lr=2e-3, warmup=2, workers=0, threads=1, log_every=1, checkpoint_every=4,
                                progress=False)
    base.update(kw)
    return TrainConfig(**base)


def log_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_writes_checkpoints_and_log(corpus: Path, tmp_path: Path) -> None:
    result = train(cfg(corpus, tmp_path / "run", steps=24, checkpoint_every=10, keep_checkpoints=1))
    losses = result["losses"]
    assert len(losses) == 24 and result["finished"]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["latest.pt", "step-00000024.pt"]  # step 10 and 20 pruned (keep 1)
    lines = log_lines(tmp_path / "run")
    assert lines[0]["event"] == "start" and lines[0]["train_samples"] == 48
    steps = [ln for ln in lines if "loss" in ln]
    assert [ln["step"] for ln in steps] == list(range(1, 25))
    assert all(ln["samples_per_s"] > 0 and ln["lr"] >= 0 for ln in steps)
    assert steps[0]["lr"] == pytest.approx(1e-3)  # warmup: step 1 of 2 -> half the peak
    ckpt = read_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 24 and ckpt["config"]["name"] == "tiny-test"
    model = load_checkpoint(tmp_path / "run", device="cpu")
    assert model.encode_text(["a tile of water"]).shape == (1, 32)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(corpus: Path, tmp_path: Path, workers: int) -> None:
    """Stop after 3 steps and resume: steps 4..8 see the same batches and give the same losses
    and weights as an uninterrupted run (with 2 workers, 3 % 2 = 1 checks the worker rotation)."""
    kw: dict[str, Any] = dict(workers=workers, checkpoint_every=3)
    full = train(cfg(corpus, tmp_path / "full", **kw))
    first = train(cfg(corpus, tmp_path / "split", stop_after=3, **kw))
    assert first["step"] == 3 and not first["finished"]
    assert read_checkpoint(tmp_path / "split")["step"] == 3
    resumed = train(cfg(corpus, tmp_path / "split", resume=True, **kw))
    assert resumed["step"] == 8 and resumed["finished"]
    assert first["losses"] == pytest.approx(full["losses"][:3], abs=0, rel=0)
    assert resumed["losses"] == pytest.approx(full["losses"][3:], rel=1e-6, abs=1e-7)
    a, b = read_checkpoint(tmp_path / "full"), read_checkpoint(tmp_path / "split")
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=1e-6), key
    assert a["data"]["positions"] == b["data"]["positions"]
    resumed_log = [ln for ln in log_lines(tmp_path / "split") if ln.get("event") == "start"]
    assert [ln["resumed"] for ln in resumed_log] == [False, True]


def test_resume_refuses_another_model_or_other_data_settings(corpus: Path, tmp_path: Path) -> None:
    train(cfg(corpus, tmp_path / "run", steps=2))
    with pytest.raises(CheckpointMismatchError, match="holds model 'tiny-test', not 'tiny-test-wide'"):
        train(cfg(corpus, tmp_path / "run", steps=4, model="tiny-test-wide", resume=True))
    with pytest.raises(TrainError, match="batch_size"):
        train(cfg(corpus, tmp_path / "run", steps=4, batch_size=4, resume=True))
    with pytest.raises(TrainError, match="already holds a training run"):
        train(cfg(corpus, tmp_path / "run", steps=4))
    with pytest.raises(TrainError, match="does not exist"):
        train(cfg(corpus, tmp_path / "fresh", steps=4, resume=True))
    with pytest.raises(CheckpointMismatchError, match="holds model 'tiny-test'"):
        load_checkpoint(tmp_path / "run", model="tiny-test-wide")


def test_shards_without_txt_are_a_clear_error(tmp_path: Path) -> None:
    register_config(tiny_model_config())
    bare = write_corpus(tmp_path / "bare", n=16, drop=("txt",))
    for workers in (0, 1):
        with pytest.raises(SampleDataError, match=r"has no txt member .*captioning stage"):
            train(cfg(bare, tmp_path / f"run{workers}", steps=2, workers=workers))


def test_manifest_count_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    register_config(tiny_model_config())
    corpus = write_corpus(tmp_path / "c", n=16)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][0]["nsamples"] = 7
    manifest["nsamples"] = 15
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SampleDataError, match="holds 8 samples but its manifest says 7"):
        train(cfg(corpus, tmp_path / "run", steps=2))


def test_missing_length_and_missing_manifest(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="--steps N or --epochs E"):
        train(cfg(corpus, tmp_path / "a", steps=None))
    with pytest.raises(InputError, match="nowhere not found: is this the output directory of `rsdata run`"):
        train(cfg(tmp_path / "nowhere", tmp_path / "b"))


def _stream(corpus: Path, **kw: Any) -> ShardStream:
    return ShardStream(StreamConfig(shards=list_shards([str(corpus)]), batch_size=4,
                                    transform=ImageTransform(32), tokenizer=HashedWordTokenizer(512, 24), **kw))


def _epoch_keys(stream: ShardStream, slot: int) -> list[str]:
    return [s["__key__"] for s, epoch, _, _ in _take_epoch(stream, slot)]


def _take_epoch(stream: ShardStream, slot: int) -> Iterator[tuple[dict[str, Any], int, str, Any]]:
    for item in stream.samples(slot):
        if item[1] > 0:
            return
        yield item


@pytest.mark.parametrize("n,per_shard", [(48, 8), (12, 12)])
def test_slots_split_an_epoch_without_overlap(tmp_path: Path, n: int, per_shard: int) -> None:
    """2 ranks x 2 workers = 4 slots: with enough shards each slot reads whole shards, with one
    shard every slot takes every 4th sample; either way an epoch is covered exactly once."""
    corpus = write_corpus(tmp_path / "c", n=n, per_shard=per_shard)
    seen: list[str] = []
    for rank in (0, 1):
        stream = _stream(corpus, rank=rank, world_size=2, num_workers=2)
        for slot in (rank * 2, rank * 2 + 1):
            seen += _epoch_keys(stream, slot)
    assert sorted(seen) == [f"tiny_{i:05d}" for i in range(n)]


def test_holdout_keys_never_train(corpus: Path) -> None:
    stream = _stream(corpus, holdout=0.25)
    keys = set(_epoch_keys(stream, 0))
    held = {f"tiny_{i:05d}" for i in range(48) if is_holdout(f"tiny_{i:05d}", 0.25)}
    assert held and not keys & held and len(keys) == 48 - len(held)


def test_augmentation_keeps_caption_directions_consistent(corpus: Path) -> None:
    """The white square's corner in the augmented image matches the rewritten caption."""
    stream = _stream(corpus, augment=True, caption="txt")
    checked = 0
    for batch in stream.slot_batches(0):
        for image, text in zip(batch["images"], batch["texts"]):
            bright = image.float().mean(0) > 230
            ys, xs = torch.nonzero(bright, as_tuple=True)
            corner = ("top" if ys.float().mean() < 16 else "bottom") + " " + ("left" if xs.float().mean() < 16 else "right")
            assert corner in text, (corner, text)
            checked += 1
        if checked >= 24:
            break


def test_cli_train_and_resume(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(tiny_model_config("tiny-cli")))
    args = ["train", "--data", str(corpus), "--out", str(run), "--model", str(cfg_file), "--steps", "4",
            "--batch-size", "8", "--workers", "0", "--threads", "1", "--quiet"]
    assert cli_main(args + ["--stop-after", "2"]) == 0
    assert "stopped (continue with --resume) at step 2/4" in capsys.readouterr().out
    assert cli_main(args) == 2  # an existing run without --resume
    assert "already holds a training run" in capsys.readouterr().err
    assert cli_main(args + ["--resume"]) == 0
    assert "finished at step 4/4" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: --steps must be a whole number >= 1
        cli_main(["train", "--data", str(corpus), "--out", str(tmp_path / "x"), "--steps", "0"])
    assert "expected 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_last_step_and_resume_finishes(corpus: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(tiny_model_config("tiny-int")))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "rsdata", "train", "--data", str(corpus), "--out", str(run), "--model",
            str(cfg_file), "--steps", "100000", "--batch-size", "4", "--workers", "0", "--log-every", "1",
            "--checkpoint-every", "100000", "--quiet"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = run / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 4:  # start + 3 steps
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    step = read_checkpoint(run)["step"]
    logged = [ln["step"] for ln in log_lines(run) if "loss" in ln]
    assert step >= 3 and step == logged[-1]  # no step lost, none half-done
    resumed = train(cfg(corpus, run, model=str(cfg_file), steps=step + 2, batch_size=4, resume=True))
    assert resumed["step"] == step + 2


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(corpus: Path, tmp_path: Path) -> None:
    """Two processes under torchrun (gloo): shards split by rank, one checkpoint with both slots."""
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(tiny_model_config("tiny-ddp")))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "rsdata",
           "train", "--data", str(corpus), "--out", str(run), "--model", str(cfg_file), "--steps", "3",
           "--batch-size", "4", "--workers", "0", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = read_checkpoint(run)
    assert ckpt["step"] == 3
    assert ckpt["data"]["signature"]["world_size"] == 2
    assert set(ckpt["data"]["positions"]) == {"0", "1"} and len(ckpt["rng"]) == 2
    start = [ln for ln in log_lines(run) if ln.get("event") == "start"][0]
    assert start["world_size"] == 2
