"""Tests of the scorers' background loader (rsdata.scoring.loader), the prepare/forward split of
the scorers, and the score stage built on them: the same scores as the plain per-sample loop,
ordered output, bounded prefetch, errors that name their sample, clean shutdown, and the CUDA
settings' fallback to the CPU."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rsdata.errors import InputError  # noqa: E402
from rsdata.imaging import decode_rgb  # noqa: E402
from rsdata.sample import Sample  # noqa: E402
from rsdata.scoring import ScorerError, create_scorer  # noqa: E402
from rsdata.scoring.base import amp_dtype, resolve_device  # noqa: E402
from rsdata.scoring.hf_clip import ClipPixels, fast_pixels, probe_images  # noqa: E402
from rsdata.scoring.loader import default_workers, prefetch  # noqa: E402
from rsdata.scoring.stage import ScoreStage  # noqa: E402
from rsdata.stats import StageStats  # noqa: E402
from scoring_helpers import build_tiny_clip, encode, sample_meta, scene  # noqa: E402

CAPTIONS = ["the road and the farm", "a river", "the buildings", "an orchard and a road", "dirt tracks",
            "the town", "farmland beside a road", "a reservoir"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tinyclip-loader") / "clip")


@pytest.fixture(scope="module")
def baseline_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = pytest.importorskip("rsdata.models")
    torch.manual_seed(0)
    return models.save_checkpoint(tmp_path_factory.mktemp("baseline") / "ckpt.pt",
                                  models.create_model("rs-cnn-tiny", pretrained=False))


def loader_threads() -> list[threading.Thread]:
    # the loader's threads only (a Ray test in the same process leaves its rsdata-ray-start thread)
    return [t for t in threading.enumerate() if t.name.startswith("rsdata-") and "loader" in t.name
            and t.is_alive()]


# --- the loader on its own ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_keeps_order_with_uneven_work(workers: int) -> None:
    rng = random.Random(workers)
    delays = [rng.uniform(0, 0.01) for _ in range(30)]

    def prepare(i: int) -> int:
        time.sleep(delays[i])
        return i * i

    out = list(prefetch(range(30), prepare, workers=workers, depth=3))
    assert out == [(i, i * i) for i in range(30)]
    assert not loader_threads()


def test_prefetch_bounds_what_is_prepared_ahead() -> None:
    """At most ``depth`` batches beyond the one the caller holds are pulled and prepared."""
    pulled: list[int] = []
    depth = 2

    def source() -> Iterator[int]:
        for i in range(20):
            pulled.append(i)
            yield i

    ahead = []
    for batch, _ in prefetch(source(), lambda b: b, workers=2, depth=depth):
        time.sleep(0.002)  # the loader has time to run ahead if it were unbounded
        ahead.append(len(pulled) - 1 - batch)
    assert max(ahead) == depth  # it does run ahead, but never further
    assert pulled == list(range(20))


def test_prefetch_runs_prepare_in_the_background_and_the_source_in_the_caller() -> None:
    caller = threading.get_ident()
    source_threads, prepare_threads = set(), set()

    def source() -> Iterator[int]:
        for i in range(6):
            source_threads.add(threading.get_ident())
            yield i

    def prepare(b: int) -> int:
        prepare_threads.add(threading.get_ident())
        return b

    assert [b for b, _ in prefetch(source(), prepare, workers=1)] == list(range(6))
    assert source_threads == {caller}
    assert caller not in prepare_threads and len(prepare_threads) == 1


def test_prefetch_error_surfaces_in_order_after_earlier_batches() -> None:
    def prepare(i: int) -> int:
        if i == 5:
            raise InputError(f"sample k{i}: the image cannot be decoded")
        return i

    got = []
    with pytest.raises(InputError, match="sample k5"):
        for batch, _ in prefetch(range(10), prepare, workers=2, depth=3):
            got.append(batch)
    assert got == [0, 1, 2, 3, 4]
    assert not loader_threads()


def test_prefetch_source_error_stops_the_loader() -> None:
    def source() -> Iterator[int]:
        yield 0
        yield 1
        raise RuntimeError("the shard went away")

    with pytest.raises(RuntimeError, match="went away"):
        list(prefetch(source(), lambda b: b, workers=1))
    assert not loader_threads()


def test_prefetch_shuts_down_on_keyboard_interrupt_and_early_close() -> None:
    started: list[int] = []

    def prepare(i: int) -> int:
        started.append(i)
        time.sleep(0.01)
        return i

    with pytest.raises(KeyboardInterrupt):
        for batch, _ in prefetch(range(1000), prepare, workers=1, depth=2):
            if batch == 3:
                raise KeyboardInterrupt
    assert not loader_threads()
    assert len(started) <= 3 + 1 + 2  # nothing queued beyond the prefetch depth ran

    gen = prefetch(range(1000), prepare, workers=2, depth=2)
    assert next(gen) == (0, 0)
    gen.close()  # a later stage stopped early
    assert not loader_threads()


def test_prefetch_rejects_bad_settings() -> None:
    with pytest.raises(ScorerError, match="workers"):
        list(prefetch([1], lambda b: b, workers=-1))
    with pytest.raises(ScorerError, match="depth"):
        list(prefetch([1], lambda b: b, depth=0))


# --- prepare + forward == score -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hf_clip", "baseline"])
def test_prepare_then_forward_is_score(kind: str, tiny_clip: Path, baseline_ckpt: Path) -> None:
    path = tiny_clip if kind == "hf_clip" else baseline_ckpt
    scorer = create_scorer(kind, str(path), batch_size=4, device="cpu")
    images = [scene(i) for i in range(4)]
    with pytest.raises(ScorerError, match="load"):
        scorer.prepare_pairs(["a"], images[:1], CAPTIONS[:1])
    scorer.load()
    prepared = scorer.prepare_pairs([f"k{i}" for i in range(4)], images, CAPTIONS[:4])
    assert len(prepared) == 4 and prepared.keys == ["k0", "k1", "k2", "k3"]
    # the images go to the model as compact uint8 crops, normalised on its device
    assert prepared.images.dtype == torch.uint8
    np.testing.assert_array_equal(scorer.score_prepared(prepared), scorer.score(images, CAPTIONS[:4]))
    with pytest.raises(ScorerError, match="as many keys"):
        scorer.prepare_pairs(["a", "b"], images[:1], CAPTIONS[:1])


def test_a_caption_the_tokenizer_refuses_names_its_sample(baseline_ckpt: Path) -> None:
    scorer = create_scorer("baseline", str(baseline_ckpt), device="cpu").load()
    module = scorer._lazy_module
    real = module.tokenize

    def picky(texts: list[str]) -> dict:
        if any("BAD" in t for t in texts):
            raise ValueError("unknown character")
        return real(texts)

    module.tokenize = picky
    try:
        with pytest.raises(ScorerError, match=r"sample s2: its caption cannot be prepared.*unknown char"):
            scorer.prepare_pairs(["s0", "s1", "s2"], [scene(i) for i in range(3)],
                                 ["a road", "a river", "BAD"])
    finally:
        del module.tokenize


def test_clip_pixels_are_the_processors_pixels(tiny_clip: Path) -> None:
    """The split preprocessing equals transformers' processor bit for bit, at the tiny model's
    32 px and at CLIP's 224 px, on square, wide, tall and small images."""
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    scorer = create_scorer("hf_clip", str(tiny_clip), device="cpu").load()
    assert scorer.describe()["preprocess"] == "rsdata ClipPixels"
    images = probe_images() + [scene(i) for i in range(3)] + [scene(9).resize((40, 90))]
    for processor in (scorer._lazy_processor, cls()):
        fast = fast_pixels(processor)
        assert fast is not None
        for im in images:
            expected = processor(images=[im], return_tensors="pt")["pixel_values"]
            crop = fast.crop([im])
            assert crop is not None and crop.dtype == torch.uint8
            torch.testing.assert_close(fast.normalize(crop), expected, rtol=0, atol=0)


def test_unusual_processor_settings_use_the_processor(tiny_clip: Path, tmp_path: Path) -> None:
    import json
    import shutil

    for change in ({"do_center_crop": False}, {"do_pad": True, "pad_size": {"height": 32, "width": 32}},
                   {"size": {"shortest_edge": 32, "longest_edge": 40}}):
        copy = shutil.copytree(tiny_clip, tmp_path / f"clip{len(list(tmp_path.iterdir()))}")
        cfg = json.loads((copy / "preprocessor_config.json").read_text())
        cfg.update(change)
        (copy / "preprocessor_config.json").write_text(json.dumps(cfg))
        scorer = create_scorer("hf_clip", str(copy), device="cpu").load()
        assert ClipPixels.from_processor(scorer._lazy_processor) is None, change
        assert scorer.describe()["preprocess"] != "rsdata ClipPixels"
        images = [scene(i) for i in range(3)]
        assert scorer.prepare_pairs(["a", "b", "c"], images, CAPTIONS[:3]).images.dtype == torch.float32
        loop = [scorer.score([im], [t])[0] for im, t in zip(images, CAPTIONS)]
        np.testing.assert_allclose(scorer.score(images, CAPTIONS[:3]), loop, atol=1e-5)


# --- the score stage --------------------------------------------------------------------------


def samples(n: int, bad: int | None = None) -> list[Sample]:
    out = []
    for i in range(n):
        data = b"not an image" if i == bad else encode(scene(i))
        meta = sample_meta(f"s{i:03d}", CAPTIONS[i % len(CAPTIONS)])
        out.append(Sample(key=f"s{i:03d}", image=data, image_format="jpg", meta=meta))
    return out


def stage_for(kind: str, path: Path, batch_size: int, workers: int | None = None,
              device: str = "cpu") -> ScoreStage:
    stage = ScoreStage({"type": "score", "scorer": kind, "model": str(path), "name": "s",
                        "batch_size": batch_size, "device": device})
    stage.loader_workers = workers
    return stage


@pytest.mark.parametrize("kind", ["hf_clip", "baseline"])
def test_stage_scores_equal_the_plain_loop(kind: str, tiny_clip: Path, baseline_ckpt: Path) -> None:
    """The stage with its loader stores the scores the per-sample loop computes, in order,
    for every loader setting and a last batch that is not full."""
    path = tiny_clip if kind == "hf_clip" else baseline_ckpt
    items = samples(11)
    single = create_scorer(kind, str(path), batch_size=1, device="cpu")
    loop = [round(float(single.score([decode_rgb(s.image, s.key)], [s.caption])[0]), 6) for s in items]
    results = {}
    for workers in (None, 0, 2):
        stats = StageStats("score")
        out = list(stage_for(kind, path, batch_size=4, workers=workers)(iter(samples(11)), stats))
        assert [s.key for s in out] == [s.key for s in items]
        assert stats.n_in == stats.n_out == 11
        results[workers] = [s.meta["scores"]["s"] for s in out]
        np.testing.assert_allclose(results[workers], loop, atol=2e-6)  # 1e-6 rounding + float noise
    assert results[None] == results[0] == results[2]  # the loader moves work, not arithmetic


def test_stage_undecodable_image_names_the_sample(tiny_clip: Path) -> None:
    stats = StageStats("score")
    out = []
    with pytest.raises(InputError, match="sample s006"):
        for s in stage_for("hf_clip", tiny_clip, batch_size=3)(iter(samples(9, bad=6)), stats):
            out.append(s.key)
    assert out == ["s000", "s001", "s002", "s003", "s004", "s005"]  # the batches before it
    assert not loader_threads()


def test_stage_stopped_early_leaves_no_thread(tiny_clip: Path) -> None:
    gen = stage_for("hf_clip", tiny_clip, batch_size=2)(iter(samples(12)), StageStats("score"))
    assert next(gen).key == "s000"
    gen.close()
    assert not loader_threads()


def test_stage_with_no_samples_loads_nothing(tiny_clip: Path) -> None:
    stage = stage_for("hf_clip", tiny_clip, batch_size=2)
    assert list(stage(iter([]), StageStats("score"))) == []
    assert not stage.scorer()._lazy_loaded


# --- CUDA settings and their CPU fallback ------------------------------------------------------


def test_cuda_settings() -> None:
    """float16 autocast on CUDA (not bfloat16: 3 more bits of mantissa), none on the CPU; more
    loader threads on CUDA, where the CPU only prepares."""
    assert amp_dtype(torch.device("cuda")) == torch.float16
    assert amp_dtype(torch.device("cpu")) is None
    assert default_workers("cpu") == 1
    assert 1 <= default_workers("cuda") <= 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without a GPU")
def test_auto_device_falls_back_to_the_cpu_in_the_stage(tiny_clip: Path) -> None:
    assert resolve_device("auto").type == "cpu"
    stage = stage_for("hf_clip", tiny_clip, batch_size=4, device="auto")
    out = list(stage(iter(samples(5)), StageStats("score")))
    scorer = stage.scorer()
    assert scorer.device.type == "cpu" and scorer.batch_size == 4
    assert scorer.describe()["device"] == "cpu"
    cpu = [s.meta["scores"]["s"] for s in stage_for("hf_clip", tiny_clip, batch_size=4)(iter(samples(5)),
                                                                                      StageStats("score"))]
    assert [s.meta["scores"]["s"] for s in out] == cpu
    prepared = scorer.prepare_pairs(["a"], [scene(0)], ["a road"])
    assert not prepared.images.is_pinned()  # pinned memory only when copying to a GPU
    assert create_scorer("hf_clip", str(tiny_clip), device="auto").batch_size == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_scores_match_the_cpu(tiny_clip: Path) -> None:  # pragma: no cover - GPU machines
    images = [scene(i) for i in range(8)]
    cpu = create_scorer("hf_clip", str(tiny_clip), device="cpu").score(images, CAPTIONS)
    gpu = create_scorer("hf_clip", str(tiny_clip), device="cuda")
    np.testing.assert_allclose(gpu.score(images, CAPTIONS), cpu, atol=5e-3)  # float16
    prepared = gpu.prepare_pairs([str(i) for i in range(8)], images, CAPTIONS)
    assert prepared.images.is_pinned()


def test_baseline_prepared_pixels_are_the_models_transform(baseline_ckpt: Path) -> None:
    """The loader's uint8 batch is what ``ImageTransform.to_uint8`` gives, image by image, and
    normalised it is ``image_transform`` (any size, RGB or not)."""
    scorer = create_scorer("baseline", str(baseline_ckpt), device="cpu").load()
    model = scorer._lazy_module
    images = [scene(0), scene(1, 128), scene(2, 200).convert("L"), scene(3).resize((150, 90))]
    batch = scorer._prepare_image_batch(images)
    expected = torch.stack([model.preprocess.to_uint8(im) for im in images])
    torch.testing.assert_close(batch, expected, rtol=0, atol=0)
    expected = torch.stack([model.image_transform(im) for im in images])
    torch.testing.assert_close(model.preprocess.normalize(batch), expected, rtol=0, atol=0)


def test_a_model_object_with_only_the_basic_api_scores_the_same(baseline_ckpt: Path) -> None:
    """``module=`` may be any object with image_transform / encode_image / encode_text (no split
    preprocessing, no tokenize): the scorer prepares floats and lets it tokenise itself."""
    from rsdata.models import load_checkpoint
    from rsdata.scoring.baseline import BaselineScorer

    class Basic(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def image_transform(self, img: object) -> torch.Tensor:
            return self.inner.image_transform(img)

        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.encode_image(x)

        def encode_text(self, texts: list[str]) -> torch.Tensor:
            return self.inner.encode_text(texts)

    basic = BaselineScorer("in-memory", module=Basic(load_checkpoint(str(baseline_ckpt))), device="cpu")
    full = create_scorer("baseline", str(baseline_ckpt), device="cpu")
    images = [scene(i) for i in range(5)]
    prepared = basic.load().prepare_pairs(list("abcde"), images, CAPTIONS[:5])
    assert prepared.images.dtype == torch.float32 and prepared.texts == CAPTIONS[:5]
    np.testing.assert_allclose(basic.score(images, CAPTIONS[:5]), full.score(images, CAPTIONS[:5]), atol=1e-6)
