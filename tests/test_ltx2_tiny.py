"""Tiny LTX-2 folders: diffusers' own pipelines load them offline and generate in seconds, with the
real 32x / 8x video compression, left-padded Gemma prompts and deterministic tensors per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ufo_video.cli import main
from ufo_video.errors import UfoError
from ufo_video.models.ltx2.tiny import MAX_SEQUENCE_LENGTH, make_tiny_ltx2

FAST = dict(num_frames=9, height=64, width=96, num_inference_steps=2, output_type="pt", spatio_temporal_guidance_blocks=[1])


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    return make_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "t2v")


def test_t2v_folder_generates_with_the_pipeline(t2v):
    from diffusers import LTX2Pipeline

    pipe = LTX2Pipeline.from_pretrained(str(t2v))
    assert (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio) == (32, 8)
    assert sum(f.stat().st_size for f in t2v.rglob("*") if f.is_file()) < 8e6
    out = pipe("a red cat", generator=torch.Generator().manual_seed(0), **FAST)
    assert out.frames.shape == (1, 9, 3, 64, 96)
    assert out.audio.shape[:2] == (1, 2) and torch.isfinite(out.audio).all()
    again = pipe("a red cat", generator=torch.Generator().manual_seed(0), **FAST)
    assert torch.equal(out.frames, again.frames)


def test_tokenizer_reloads_left_padded_to_1024(t2v):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(t2v / "tokenizer"))
    ids = tok(["a red cat"], padding="max_length", max_length=MAX_SEQUENCE_LENGTH).input_ids[0]
    assert len(ids) == MAX_SEQUENCE_LENGTH and tok.padding_side == "left"
    assert ids[0] == tok.pad_token_id == 0 and ids[-10] == tok.bos_token_id == 2
    assert tok.unk_token_id not in ids and tok.decode(ids, skip_special_tokens=True) == "a red cat"


def test_same_seed_same_tensors_other_seed_differs(tmp_path, t2v):
    from safetensors.torch import load_file

    def weights(folder):
        return load_file(str(next((folder / "transformer").glob("*.safetensors"))))

    again = weights(make_tiny_ltx2(tmp_path / "a"))
    other = weights(make_tiny_ltx2(tmp_path / "b", seed=1))
    first = weights(t2v)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_i2v_folder_and_version_23_generate(tmp_path):
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

    folder = make_tiny_ltx2(tmp_path / "i2v", variant="i2v")
    pipe = LTX2ImageToVideoPipeline.from_pretrained(str(folder))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    out = pipe(image=image, prompt="a cat", generator=torch.Generator().manual_seed(0), **FAST)
    assert out.frames.shape == (1, 9, 3, 64, 96)

    v23 = make_tiny_ltx2(tmp_path / "v23", version="2.3")
    pipe23 = LTX2Pipeline.from_pretrained(str(v23))
    assert pipe23.transformer.config.gated_attn and pipe23.connectors.config.per_modality_projections
    assert pipe23("a cat", generator=torch.Generator().manual_seed(0), **FAST).frames.shape == (1, 9, 3, 64, 96)


def test_refuses_non_empty_folder_and_unknown_names(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(UfoError, match="not an empty folder"):
        make_tiny_ltx2(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    with pytest.raises(UfoError, match="variant"):
        make_tiny_ltx2(tmp_path / "y", variant="flf2v")
    with pytest.raises(UfoError, match="version"):
        make_tiny_ltx2(tmp_path / "z", version="2.5")


def test_make_tiny_cli_writes_ltx23_with_the_variant_suffix(tmp_path, capsys):
    """`model make-tiny --family ltx2 --variant i2v-2.3`: an LTX-2.3 folder (gated attention,
    per-modality connector projections) with the image-to-video pipeline class; an unknown
    variant is one line, exit 2."""
    from ufo_video.models.registry import model_shell

    folder = tmp_path / "v23"
    assert main(["model", "make-tiny", str(folder), "--family", "ltx2", "--variant", "i2v-2.3"]) == 0
    shell = model_shell(folder)
    assert shell.info.extra["version"] == "2.3" and shell.info.variant == "i2v"
    assert shell.info.extra["transformer_config"]["gated_attn"] is True
    assert model_shell(make_tiny_ltx2(tmp_path / "v20")).info.extra["version"] == "2.0"
    capsys.readouterr()
    assert main(["model", "make-tiny", str(tmp_path / "bad"), "--family", "ltx2", "--variant", "t2v-2.5"]) == 2
    assert "t2v-2.3" in capsys.readouterr().err
