"""The field's (VBench's) metrics: each definition on synthetic videos with known answers, the
backbones loaded from a `--backbones` folder / the caches (tiny random-initialised networks written
here with save_pretrained / safetensors), and "unavailable" when no weights are found."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
import torch

from ufo_video.cli import main
from ufo_video.errors import UfoError
from ufo_video.eval import field_metrics as FM
from ufo_video.eval.backbones import Backbone, Unavailable, load_backbone
from ufo_video.media_write import write_video

F, H, W, SHIFT, CUT = 9, 64, 64, 3, 5
ALL = "subject_consistency,background_consistency,temporal_flickering,motion_smoothness,dynamic_degree"
_TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64)


def _texture(seed: int, size: int = H + 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2)
    return ((tex - tex.min()) / (tex.max() - tex.min()) * 200).astype(np.uint8)  # <= 200: room to brighten


@pytest.fixture(scope="module")
def videos() -> dict[str, np.ndarray]:
    a, b = _texture(0), _texture(1)
    static = np.stack([a[20 : 20 + H, 20 : 20 + W]] * F)
    # The crop window moves right by SHIFT px a frame: frame_t(x) = frame_{t+1}(x - SHIFT).
    shift = np.stack([a[20 : 20 + H, 20 + SHIFT * t : 20 + SHIFT * t + W] for t in range(F)])
    flicker = np.stack([f + (40 if t % 2 else 0) for t, f in enumerate(static)]).astype(np.uint8)
    cut = np.concatenate([static[:CUT], np.stack([b[20 : 20 + H, 20 : 20 + W]] * (F - CUT))])
    return {"static": static, "shift": shift, "flicker": flicker, "cut": cut}


def translation_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A perfect flow estimator for videos that only translate horizontally by whole pixels:
    the dx (|dx| <= 12) for which a(x) = b(x + dx) best on the overlap, for every pixel."""
    out = np.zeros((*a.shape[:3], 2), dtype=np.float32)
    for i, (fa, fb) in enumerate(zip(a.astype(int), b.astype(int))):
        errs = {dx: np.abs(fa[:, max(0, -dx) : W - max(0, dx)] - fb[:, max(0, dx) : W + min(0, dx)]).mean()
                for dx in range(-12, 13)}
        out[i, ..., 0] = min(errs, key=errs.get)
    return out


def zero_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.zeros((*a.shape[:3], 2), dtype=np.float32)


# --- the definitions --------------------------------------------------------------------------

def test_consistency_definition_by_hand():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    assert FM.feature_consistency([e1, e1, e1]) == pytest.approx(1.0)
    # frame 2 is orthogonal to the first and the previous: terms 1 and 0
    assert FM.feature_consistency([e1, e1, e2]) == pytest.approx(0.5)
    # frame 2 = previous, not first: (1 + 0) / 2; a negative cosine counts as 0 (VBench's max(0, .))
    assert FM.consistency_terms([e1, e2, e2]).tolist() == pytest.approx([0.0, 0.5])
    assert FM.feature_consistency([e1, [-1.0, 0.0]]) == 0.0
    assert FM.feature_consistency([[3.0, 4.0], [6.0, 8.0]]) == pytest.approx(1.0)  # scale-free


def test_temporal_flickering(videos):
    assert FM.temporal_flickering(videos["static"]) == 1.0
    assert FM.temporal_flickering(videos["flicker"]) == pytest.approx((255 - 40) / 255)
    assert FM.temporal_flickering(videos["shift"]) < FM.temporal_flickering(videos["static"])


def test_dynamic_degree_rule(videos):
    assert FM.dynamic_degree(videos["static"], 8, translation_flow) is False
    assert FM.dynamic_degree(videos["shift"], 8, translation_flow) is True
    # 1 px a frame is under the threshold 6 * 64 / 256 = 1.5 px: not dynamic
    slow = np.stack([_texture(0)[20 : 20 + H, 20 + t : 20 + t + W] for t in range(F)])
    assert FM.dynamic_degree(slow, 8, translation_flow) is False
    # at 24 fps VBench keeps every 3rd frame: 3 px a frame becomes 9 px a kept pair
    seen = []
    FM.dynamic_degree(videos["shift"], 24, lambda a, b: seen.append(len(a)) or translation_flow(a, b))
    assert seen == [2]  # frames 0, 3, 6 → 2 pairs
    # one moving pair of 8 is not enough: round(4 * 9 / 16) = 2 are needed
    one = videos["static"].copy()
    one[5:] = videos["shift"][1]
    assert FM.dynamic_degree(one, 8, translation_flow) is False


def test_motion_smoothness_proxy(videos):
    assert FM.motion_smoothness_proxy(videos["static"], zero_flow) == 1.0
    # odd frames are 40 brighter: re-made from their even neighbours they miss by exactly 40
    assert FM.motion_smoothness_proxy(videos["flicker"], zero_flow) == pytest.approx((255 - 40) / 255)
    good = FM.motion_smoothness_proxy(videos["shift"], translation_flow)
    blind = FM.motion_smoothness_proxy(videos["shift"], zero_flow)
    assert good > 0.995 and blind < good - 0.01  # flow-warped interpolation re-makes a smooth pan
    with pytest.raises(UfoError, match="at least 3 frames"):
        FM.motion_smoothness_proxy(videos["static"][:2], zero_flow)


def test_definitions_cite_vbench():
    for name, d in FM.FIELD_DEFINITIONS.items():
        assert "Vchitect/VBench" in d["source"] and d["better"] == "higher"
    assert FM.FIELD_DEFINITIONS["motion_smoothness"]["vbench_exact"] is False
    assert "PROXY" in FM.FIELD_DEFINITIONS["motion_smoothness"]["meaning"]
    assert FM.parse_metric_names("dynamic_degree, temporal_flickering,dynamic_degree") == [
        "dynamic_degree", "temporal_flickering"]
    with pytest.raises(UfoError, match="unknown"):
        FM.parse_metric_names("subject_consistency,aesthetic")


# --- backbones: loading path, features, unavailable ------------------------------------------

@pytest.fixture(scope="module")
def backbones_dir(tmp_path_factory):
    """DINO as a ViTModel folder, CLIP as a full CLIPModel folder (as openai's repo is)."""
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    ViTModel(ViTConfig(**_TINY), add_pooling_layer=False).save_pretrained(root / "dino")
    text = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    CLIPModel(CLIPConfig(text_config=text, vision_config=_TINY, projection_dim=16)).save_pretrained(root / "clip")
    return root


def test_backbones_load_from_folder(backbones_dir, videos):
    from safetensors.torch import load_file

    dino, clip = load_backbone("dino", backbones_dir), load_backbone("clip", backbones_dir)
    assert isinstance(dino, Backbone) and dino.architecture == "ViTModel"
    assert isinstance(clip, Backbone) and clip.architecture == "CLIPVisionModelWithProjection"
    saved = load_file(str(backbones_dir / "clip" / "model.safetensors"))
    assert torch.equal(clip.model.visual_projection.weight, saved["visual_projection.weight"])
    for model, features in ((dino.model, FM.dino_features), (clip.model, FM.clip_features)):
        assert FM.feature_consistency(features(model, videos["static"])) == pytest.approx(1.0, abs=1e-6)
        terms = FM.consistency_terms(features(model, videos["cut"]))
        assert terms[: CUT - 1].tolist() == pytest.approx([1.0] * (CUT - 1), abs=1e-6)  # before the cut
        assert terms[CUT - 1] < 1 - 1e-4  # the first frame after the cut: both cosines drop
        assert terms[CUT].item() == pytest.approx((1 + terms[CUT - 1].item()) / 2, abs=1e-6)  # same as previous


def test_dinov2_folder_and_hf_cache(tmp_path, monkeypatch, videos):
    """A Dinov2Model folder works, and facebook/dino-vitb16 is found in the HF cache (no network)."""
    from huggingface_hub import constants
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(**_TINY)).save_pretrained(tmp_path / "bb" / "dino")
    got = load_backbone("dino", tmp_path / "bb")
    assert isinstance(got, Backbone) and got.architecture == "Dinov2Model"
    assert FM.feature_consistency(FM.dino_features(got.model, videos["static"])) == pytest.approx(1.0, abs=1e-6)

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    missing = load_backbone("dino")
    assert isinstance(missing, Unavailable) and "facebook/dino-vitb16 is not in the Hugging Face cache" in missing.reason
    repo = cache / "models--facebook--dino-vitb16"
    Dinov2Model(Dinov2Config(**_TINY)).save_pretrained(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    cached = load_backbone("dino")
    assert isinstance(cached, Backbone) and cached.source == str(repo / "snapshots" / "abc123")


def test_unavailable_reasons(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for kind in ("dino", "clip"):
        got = load_backbone(kind, empty)
        assert isinstance(got, Unavailable) and f"{empty / kind}/config.json not found" in got.reason
    assert "no raft_large or raft_small weights" in load_backbone("raft", empty).reason
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert "raft_large_C_T_V1-22a6c225.pth not found" in load_backbone("raft").reason
    # weights present but torchvision missing (or, as on CPU-only torch with a CUDA torchvision, broken)
    (empty / "raft").mkdir()
    (empty / "raft" / "raft_small.safetensors").write_bytes(b"x")
    for module in ("torchvision", "torchvision.models.optical_flow"):
        monkeypatch.setitem(sys.modules, module, None)
    assert "torchvision cannot be imported" in load_backbone("raft", empty).reason
    # a folder whose weights are broken is unavailable with the reason, not a crash
    (empty / "dino").mkdir()
    (empty / "dino" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "expected a DINO ViT" in load_backbone("dino", empty).reason


def _torchvision_raft():
    try:
        from torchvision.models.optical_flow import raft_small
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"torchvision cannot be imported here ({type(exc).__name__}: {exc}); RAFT path untested")
    return raft_small


def test_raft_small_from_folder(tmp_path, videos):
    from safetensors.torch import save_file

    raft_small = _torchvision_raft()
    torch.manual_seed(0)
    model = raft_small(weights=None)
    (tmp_path / "raft").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "raft" / "raft_small.safetensors"))
    got = load_backbone("raft", tmp_path)
    assert isinstance(got, Backbone) and got.architecture == "raft_small"
    assert all(torch.equal(a, b) for a, b in zip(got.model.state_dict().values(), model.state_dict().values()))
    flow = FM.raft_flow(got.model, iters=2)
    odd = videos["shift"][:, :60, :60]  # not a multiple of 8: padded, then cropped back
    assert flow(odd[:2], odd[1:3]).shape == (2, 60, 60, 2)
    scorer = FM.FieldScorer(["dynamic_degree", "motion_smoothness"], tmp_path, "cpu")
    values, notes = scorer.score(videos["static"][:5], 8)
    assert notes == {} and isinstance(values["dynamic_degree"], bool) and 0 <= values["motion_smoothness"] <= 1


# --- the CLI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(videos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {k: write_video(v, folder / f"{k}.mp4", fps=8, lossless=True) for k, v in videos.items()}


def test_cli_field_metrics(clips, backbones_dir, tmp_path, capsys):
    plain_out = tmp_path / "plain.json"
    assert main(["eval", str(clips["static"]), str(clips["cut"]), "--out", str(plain_out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(clips["static"]), str(clips["cut"]), "--metrics", ALL,
                 "--backbones", str(backbones_dir), "--device", "cpu", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    plain = json.loads(plain_out.read_text())
    assert "field_metrics" not in plain and "field_metrics" not in plain["videos"][0]
    for with_field, without in zip(report["videos"], plain["videos"]):  # weight-free metrics unchanged
        assert with_field["metrics"] == without["metrics"]
    field = report["field_metrics"]
    assert field["requested"] == ALL.split(",") and field["backbones_dir"] == str(backbones_dir)
    assert set(field["definitions"]) == set(ALL.split(","))
    assert field["definitions"]["subject_consistency"]["source"].endswith("vbench/subject_consistency.py")
    assert field["backbones"]["dino"]["available"] and field["backbones"]["clip"]["available"]
    static, cut = (row["field_metrics"] for row in report["videos"])
    assert static["subject_consistency"] == pytest.approx(1.0, abs=1e-6)
    assert static["background_consistency"] == pytest.approx(1.0, abs=1e-6)
    assert static["temporal_flickering"] == pytest.approx(1.0)
    assert cut["subject_consistency"] < static["subject_consistency"] - 1e-4
    assert cut["background_consistency"] < static["background_consistency"] - 1e-4
    assert cut["temporal_flickering"] < 1.0
    # No RAFT weights in the folder: the flow metrics are unavailable, with the reason, not faked.
    for name in ("dynamic_degree", "motion_smoothness"):
        assert static[name] is None and cut[name] is None
        assert field["unavailable"][name].startswith("unavailable: ")
        assert report["videos"][0]["field_notes"][name] == field["unavailable"][name]
        assert f"note: {name} unavailable" in captured.err


def test_cli_field_table_and_unavailable(clips, tmp_path, capsys):
    empty = tmp_path / "bb"
    empty.mkdir()
    assert main(["eval", str(clips["flicker"]), "--metrics", "subject_consistency,temporal_flickering",
                 "--backbones", str(empty)]) == 0
    text = capsys.readouterr().out
    header, row = text.splitlines()[:2]
    assert header.split()[-2:] == ["subject_cons", "t_flicker"]
    assert row.split()[-2] == "n/a" and float(row.split()[-1]) == pytest.approx((255 - 40) / 255, abs=2e-3)
    assert f"subject_consistency: unavailable: {empty / 'dino'}/config.json not found" in text


def test_cli_field_errors(clips, tmp_path, capsys):
    assert main(["eval", str(clips["static"]), "--metrics", "aesthetic_quality"]) == 2
    assert "--metrics: unknown ['aesthetic_quality']" in capsys.readouterr().err
    assert main(["eval", str(clips["static"]), "--backbones", str(tmp_path)]) == 2
    assert "--backbones is only used with --metrics" in capsys.readouterr().err
    assert main(["eval", str(clips["static"]), "--metrics", "dynamic_degree", "--backbones", str(tmp_path / "no")]) == 2
    assert "folder not found" in capsys.readouterr().err
