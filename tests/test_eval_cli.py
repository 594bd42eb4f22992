"""`ufo-video eval` and the video reader on real mp4/gif files (H.264 is lossy: tolerances)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from ufo_video.cli import main
from ufo_video.errors import UfoError
from ufo_video.eval import vbench_extra
from ufo_video.eval.video_io import read_frames, read_video
from ufo_video.media_write import write_video

F, H, W, SHIFT = 9, 64, 64, 3


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((H + 80, W + 80, 3)).astype(np.float32), (0, 0), 2)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)
    static = np.stack([tex[20 : 20 + H, 20 : 20 + W]] * F)
    moving = np.stack([tex[20 : 20 + H, 20 + SHIFT * t : 20 + SHIFT * t + W] for t in range(F)])
    folder = tmp_path_factory.mktemp("clips")
    return {
        "static": write_video(static, folder / "static.mp4", fps=8),
        "moving": write_video(moving, folder / "moving.mp4", fps=8),
        "gif": write_video(moving, folder / "moving.gif", fps=8),
        "frames": moving,
    }


def test_read_frames_mp4_and_gif(clips):
    frames, fps = read_video(clips["moving"])
    assert frames.shape == (F, H, W, 3) and frames.dtype == np.uint8 and fps == pytest.approx(8)
    # Lossy H.264 (crf 18, 4:2:0 chroma): luma stays close; channel order is RGB, not BGR.
    luma = np.array([0.299, 0.587, 0.114])
    assert np.abs(frames @ luma - clips["frames"] @ luma).mean() < 3
    rgb_err = np.abs(frames.astype(int) - clips["frames"].astype(int)).mean()
    assert rgb_err < np.abs(frames.astype(int) - clips["frames"][..., ::-1].astype(int)).mean() / 2
    assert read_frames(clips["moving"], max_frames=3).shape[0] == 3
    gif = read_frames(clips["gif"])
    assert gif.shape == (F, H, W, 3)
    assert np.abs(gif.astype(int) - clips["frames"].astype(int)).mean() < 12  # 256-colour palette


def test_read_frames_errors(tmp_path):
    with pytest.raises(UfoError, match="not found"):
        read_frames(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(UfoError, match="junk.mp4: cannot decode"):
        read_frames(junk)


def test_cli_json_report(clips, tmp_path, capsys):
    out = tmp_path / "report" / "eval.json"
    code = main(["eval", str(clips["static"]), str(clips["moving"]), "--json", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    static, moving = printed["videos"]
    assert static["path"] == str(clips["static"]) and static["frames"] == F and static["size"] == [H, W]
    assert set(static["metrics"]) == set(printed["definitions"])
    assert printed["definitions"]["ssim"]["better"] == "higher"
    assert printed["definitions"]["warp_error"]["better"] == "lower"
    s, m = static["metrics"], moving["metrics"]
    assert s["ssim"] > 0.98 and s["psnr_db"] > 40 and s["warp_error"] < 0.01 and s["flow_px"] < 0.3
    assert s["is_dynamic"] is False
    assert m["flow_px"] == pytest.approx(SHIFT, rel=0.2) and m["is_dynamic"] is True
    assert s["ssim"] > m["ssim"] and s["psnr_db"] > m["psnr_db"]
    assert m["warp_error"] < 0.05
    assert printed["vbench"]["requested"] is False


def test_cli_table(clips, capsys):
    assert main(["eval", str(clips["static"]), str(clips["gif"]), "--max-frames", "5"]) == 0
    text = capsys.readouterr().out
    header, first, second = text.splitlines()[:3]
    assert header.split()[:5] == ["video", "frames", "HxW", "ssim", "psnr_db"]
    assert first.startswith(str(clips["static"])) and first.split()[1] == "5" and first.split()[-1] == "False"
    assert second.startswith(str(clips["gif"])) and second.split()[-1] == "True"
    assert "more consistent = higher ssim" in text


def test_cli_bad_videos_exit_2(clips, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert main(["eval", str(clips["static"]), str(missing)]) == 2
    assert f"not found: {missing}" in capsys.readouterr().err
    junk = tmp_path / "junk.gif"
    junk.write_bytes(b"GIF89a broken")
    assert main(["eval", str(junk)]) == 2
    assert "junk.gif: cannot decode" in capsys.readouterr().err
    assert main(["eval", str(clips["static"]), "--max-frames", "1"]) == 2
    assert "--max-frames must be at least 2" in capsys.readouterr().err


def test_vbench_absent_is_reported_not_fatal(clips, monkeypatch, capsys):
    monkeypatch.setattr(vbench_extra.importlib.util, "find_spec", lambda name: None)
    assert main(["eval", str(clips["static"]), "--vbench", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["vbench"]["available"] is False and "not available" in report["vbench"]["reason"]
    assert "vbench" not in report["videos"][0]
    assert "not available" in captured.err


def test_vbench_runs_only_locally_available_dims(clips, tmp_path, monkeypatch, capsys):
    """With VBench installed, only dimensions whose weights are already cached are requested,
    in local mode (VBench downloads nothing for those)."""
    cache = tmp_path / "vbench-cache"
    (cache / "raft_model" / "models").mkdir(parents=True)
    (cache / "raft_model" / "models" / "raft-things.pth").write_bytes(b"x")
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(cache))
    monkeypatch.setattr(vbench_extra.importlib.util, "find_spec", lambda name: object())
    calls = []

    class FakeVBench:
        def __init__(self, device, full_info_dir, output_path):
            self.out = Path(output_path)
            self.out.mkdir(parents=True, exist_ok=True)

        def evaluate(self, videos_path, name, dimension_list, local, mode):
            calls.append((videos_path, list(dimension_list), local, mode))
            results = {d: [0.5, [{"video_path": videos_path}]] for d in dimension_list}
            (self.out / f"{name}_eval_results.json").write_text(json.dumps(results))

    monkeypatch.setitem(sys.modules, "vbench", types.SimpleNamespace(VBench=FakeVBench))
    assert main(["eval", str(clips["moving"]), "--vbench", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == [(str(clips["moving"]), ["temporal_flickering", "dynamic_degree"], True, "custom_input")]
    assert report["videos"][0]["vbench"] == {"temporal_flickering": 0.5, "dynamic_degree": 0.5}
    assert "subject_consistency" in report["vbench"]["missing"]
