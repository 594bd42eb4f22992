"""`ufo-video data check | preview | stats` through the public CLI."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_data_fixtures import make_dataset, write_image, write_meta, write_mp4

from ufo_video.cli import main


def _empty_avi(path: Path) -> Path:
    c = av.open(str(path), "w", format="avi")
    s = c.add_stream("mpeg4", rate=8)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    c.close()
    return path


def _problem_dataset(root: Path) -> tuple[Path, set[tuple[int, str]]]:
    """One entry per problem code (plus a good image and a good video); returns meta and (index, code)."""
    write_image(root / "good.png")
    write_mp4(root / "good.mp4", frames=12)
    write_mp4(root / "short.mp4", frames=5)
    (root / "zero.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "anim.gif").write_bytes(b"GIF89a")
    write_image(root / "nocap.png")
    write_image(root / "big.png", size=(300, 300))
    _empty_avi(root / "empty.avi")
    write_image(root.parent / "outside.png")
    rows = [
        ("good.png", "a red square", None),
        ("good.mp4", "a red video", None),
        ("missing.png", "x", "missing_file"),
        ("zero.mp4", "x", "unreadable"),
        ("random.mp4", "x", "unreadable"),
        ("empty.avi", "x", "zero_frames"),
        ("short.mp4", "x", "too_short"),
        ("anim.gif", "x", "unsupported_format"),
        ("nocap.png", "", "empty_caption"),
        ("../outside.png", "x", "outside_root"),
        ("./good.png", "again", "duplicate"),
        ("big.png", "x", "too_large"),
    ]
    meta = write_meta(root / "metadata.json", [{"file_path": f, "text": t} for f, t, _ in rows])
    return meta, {(i, code) for i, (_, _, code) in enumerate(rows) if code}


def test_check_reports_every_problem_code(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    meta, expected = _problem_dataset(root)
    code = main(["data", "check", str(meta), "--json", "--workers", "2",
                 "clip_mode=video", "video_sample_n_frames=9", "max_image_pixels=20000"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["entries"] == 12 and report["ok"] == 2
    found = {(p["index"], p["problem"]) for p in report["problems"]}
    assert found == expected
    short = next(p for p in report["problems"] if p["problem"] == "too_short")
    assert "5 frames at stride 1" in short["message"] and short["file_path"] == "short.mp4"


def test_check_clean_dataset_exits_0_with_human_summary(tmp_path: Path, capsys) -> None:
    meta = make_dataset(tmp_path, n_images=2, n_videos=1)
    assert main(["data", "check", str(meta), "--workers", "1"]) == 0
    assert "3 entries: 3 ok, 0 with problems (0 problems)" in capsys.readouterr().out


@pytest.mark.parametrize("content, code", [("[{", "invalid_json"), ('[{"text": "x"}]', "missing_field"),
                                           ('[{"file_path": 5}]', "wrong_type")])
def test_check_file_level_problems(tmp_path: Path, capsys, content: str, code: str) -> None:
    (tmp_path / "m.json").write_text(content)
    assert main(["data", "check", str(tmp_path / "m.json"), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [p["problem"] for p in problems] == [code]


def test_check_reads_config_file(tmp_path: Path, capsys) -> None:
    write_mp4(tmp_path / "v.mp4", frames=5)
    meta = write_meta(tmp_path / "m.json", [{"file_path": "v.mp4", "text": "x"}])
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nclip_mode = "video"\nvideo_sample_n_frames = 17\n')
    assert main(["data", "check", str(meta), "--config", str(cfg), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"][0]["problem"] == "too_short"
    assert main(["data", "check", str(meta), "--json"]) == 0  # static clips need one frame


def test_preview_writes_what_the_trainer_sees(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ds"
    meta = make_dataset(root, n_images=2, n_videos=1)
    out = tmp_path / "preview"
    assert main(["data", "preview", str(meta), "--out", str(out), "--n", "3", "image_sample_size=32",
                 "video_sample_size=32", "video_sample_n_frames=5", "dataloader_num_workers=0",
                 "text_drop_ratio=0"]) == 0
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 3 and len(list(out.glob("*.txt"))) == 3
    with av.open(str(videos[0])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape[0] % 16 == 0
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() <= 8  # static clip
    texts = {p.read_text() for p in out.glob("*.txt")}
    assert texts == {"image 0", "image 1", "video 0"}


def test_preview_one_frame_clips_are_png(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path / "ds", n_images=1, n_videos=0)
    out = tmp_path / "p"
    assert main(["data", "preview", str(meta), "--out", str(out), "--n", "1", "image_sample_size=32",
                 "video_sample_n_frames=1", "dataloader_num_workers=0"]) == 0
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and Image.open(pngs[0]).size[0] % 16 == 0


def test_stats(tmp_path: Path, capsys) -> None:
    meta = make_dataset(tmp_path, n_images=3, n_videos=2)
    assert main(["data", "stats", str(meta), "--json", "image_sample_size=32", "video_sample_size=32",
                 "dataloader_num_workers=0"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["types"] == {"image": 3, "video": 2} and stats["usable"] == 5
    assert stats["video_fps"].startswith("min 8") and stats["batches_epoch0"] == 5
    assert sum(stats["buckets_epoch0"].values()) == 5
    assert main(["data", "stats", str(meta), "dataloader_num_workers=0"]) == 0
    assert "buckets" in capsys.readouterr().out


def _with_missing(root: Path, n: int) -> Path:
    """A dataset of 2 good images plus `n` entries whose files do not exist (no decoding needed)."""
    write_image(root / "a.png")
    write_image(root / "b.png")
    records = [{"file_path": "a.png", "text": "a"}, {"file_path": "b.png", "text": "b"}]
    records += [{"file_path": f"gone/{i}.png", "text": "x"} for i in range(n)]
    return write_meta(root / "metadata.json", records)


def test_thousands_of_missing_files_are_summarised_not_listed(tmp_path: Path, capsys) -> None:
    meta = _with_missing(tmp_path, 2000)
    assert main(["data", "check", str(meta), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "2002 entries: 2 ok, 2000 with problems" in out and "missing_file: 2000" in out
    assert out.count("[missing_file] entry") == 5 and "[missing_file] ... and 1995 more (--json lists all)" in out
    assert len(out.splitlines()) < 12
    assert main(["data", "check", str(meta), "--json"]) == 1
    assert len(json.loads(capsys.readouterr().out)["problems"]) == 2000  # --json keeps every one
    assert main(["data", "stats", str(meta)]) == 0
    out = capsys.readouterr().out
    assert out.count("unusable ") == 6 and "... and 1995 more (1995 x No such file or directory)" in out
    assert len(out.splitlines()) < 25
