"""Decoding: colours stay right (videos and every image mode), EXIF orientation, size caps before
decoding, broken files, and the isolated worker pool (timeout, crash, bug)."""

from __future__ import annotations

import faulthandler
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_fixtures import write_image, write_mp4

from ufo_video.data import media
from ufo_video.data.workers import IsolatedPool, map_isolated

L = media.Limits()


def _is_red(pixel, tol: int = 12) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r >= 255 - tol and g <= tol and b <= tol


def test_video_frames_are_rgb_red_stays_red(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "red.mp4", frames=9)
    one = media.decode_video_frame(path, 4, L)
    many = media.decode_video_frames(path, [0, 4, 8], L)
    assert one.shape == (48, 64, 3) and many.shape == (3, 48, 64, 3)
    assert _is_red(one[24, 32]) and all(_is_red(f[24, 32]) for f in many)


@pytest.mark.parametrize("ext, codec", [(".mkv", "libx264"), (".avi", "mpeg4"), (".webm", "libvpx"), (".mov", "libx264")])
def test_other_containers_decode_red(tmp_path: Path, ext: str, codec: str) -> None:
    path = write_mp4(tmp_path / f"red{ext}", frames=5, codec=codec)
    info = media.probe_video(path, L)
    assert (info.width, info.height, info.frames) == (64, 48, 5)
    assert _is_red(media.decode_video_frame(path, info.frames // 2, L)[24, 32], tol=20)


def test_middle_frame_is_located_by_seek(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "m.mp4", frames=12, moving=True)  # frame k has patch value 16k
    for k in (0, 6, 11):
        assert abs(int(media.decode_video_frame(path, k, L)[2, 2, 0]) - 16 * k) <= 3


def test_image_modes_to_rgb(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(cmyk)  # CMYK red
    assert _is_red(media.decode_image(cmyk, L)[16, 16], tol=20)

    g16 = tmp_path / "g16.png"
    Image.fromarray(np.full((8, 8), 0x8000, np.uint16)).save(g16)
    assert Image.open(g16).mode.startswith("I")
    assert media.decode_image(g16, L)[0, 0].tolist() == [128, 128, 128]  # scaled, not clipped to 255

    grey = write_image(tmp_path / "grey.png", size=(8, 8), color=77, mode="L")
    assert media.decode_image(grey, L)[0, 0].tolist() == [77, 77, 77]

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)
    rgba[:, 4:] = (0, 0, 255, 0)  # fully transparent blue -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = media.decode_image(tmp_path / "a.png", L)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 7].tolist() == [255, 255, 255]

    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert media.decode_image(tmp_path / "p.png", L)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[media.EXIF_ORIENTATION] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    assert media.probe_image(path, L).width == 40 and media.probe_image(path, L).height == 60
    out = media.decode_image(path, L)
    assert out.shape == (60, 40, 3)
    assert _is_red(out[5, 20], tol=30) and out[55, 20, 2] > 200  # stored left (red) is now on top


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR (8-bit RGB) + IEND: a header that claims a size, with no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_size_caps_checked_from_headers(tmp_path: Path) -> None:
    img = write_image(tmp_path / "a.png", size=(40, 60))
    with pytest.raises(media.MediaError) as err:
        media.decode_image(img, media.Limits(max_image_pixels=100))
    assert err.value.code == "too_large" and "max_image_pixels" in str(err.value)
    vid = write_mp4(tmp_path / "v.mp4", frames=12)
    for limits, key in ((media.Limits(max_video_frames=5), "max_video_frames"),
                        (media.Limits(max_video_pixels=100), "max_video_pixels")):
        with pytest.raises(media.MediaError, match=key) as err:
            media.decode_video_frames(vid, [0], limits)
        assert err.value.code == "too_large"
    # a PNG header claiming 30000 x 30000 is refused without allocating its pixels
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    t = time.monotonic()
    with pytest.raises(media.MediaError) as err:
        media.decode_image(bomb, L)
    assert err.value.code == "too_large" and time.monotonic() - t < 2


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    good = write_mp4(tmp_path / "good.mp4", frames=20)
    fast = write_mp4(tmp_path / "fast.mp4", frames=20, faststart=True).read_bytes()
    files = {"zero": tmp_path / "zero.mp4", "truncated": tmp_path / "trunc.mp4",
             "truncated_faststart": tmp_path / "trunc_fs.mp4", "random": tmp_path / "random.mp4"}
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[:1500])
    files["truncated_faststart"].write_bytes(fast[: len(fast) * 2 // 3])
    files["random"].write_bytes(np.random.default_rng(0).bytes(4000))
    return files


def test_broken_videos_are_errors_with_reasons_in_isolated_workers(tmp_path: Path) -> None:
    files = _broken_files(tmp_path)
    outs = map_isolated(media.task_check, [(str(p), "video", L) for p in files.values()], 2, 20)
    for name, out in zip(files, outs):
        assert not out.ok and out.code == "unreadable", name
        assert str(files[name]) in out.reason
    assert "empty file" in outs[0].reason


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _crash() -> None:
    faulthandler.disable()  # keep pytest's crash dump of this deliberate segfault off the terminal
    os.kill(os.getpid(), signal.SIGSEGV)


def _bug() -> None:
    raise TypeError("a programming error")


def test_pool_survives_hang_and_crash_and_reraises_bugs() -> None:
    with IsolatedPool(workers=2, timeout=1.0) as pool:
        pool.submit("hang", _sleep, 30)
        pool.submit("crash", _crash)
        pool.submit("fine", _sleep, 0)
        t = time.monotonic()
        hang, crash, fine = pool.result("hang"), pool.result("crash"), pool.result("fine")
        assert time.monotonic() - t < 10
        assert not hang.ok and "timed out after 1 s" in hang.reason
        assert not crash.ok and "died" in crash.reason and str(-signal.SIGSEGV) in crash.reason
        assert fine.ok and fine.value == "slept"
        pool.submit("after", _sleep, 0)  # replaced workers still serve
        assert pool.result("after").ok
        pool.submit("bug", _bug)
        with pytest.raises(RuntimeError, match="a programming error"):
            pool.result("bug")


def _numbered_video(path: Path, frames: int, gop: int) -> Path:
    """Lossless H.264 whose frame i has the value 5 * (i % 50) everywhere (its number is readable back
    through the colour conversion's rounding)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv444p"
        stream.codec_context.gop_size = gop
        stream.options = {"qp": "0", "preset": "ultrafast", "bf": "2"}
        for i in range(frames):
            img = np.full((32, 32, 3), 5 * (i % 50), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_late_clip_is_reached_by_seeking_and_equals_decoding_from_frame_0(tmp_path: Path, monkeypatch) -> None:
    path = _numbered_video(tmp_path / "long.mp4", 160, gop=12)
    indices = list(range(101, 140, 3))
    monkeypatch.setattr(media, "_decode_from_start", lambda *a: (_ for _ in ()).throw(AssertionError("no seek")))
    seeked = media.decode_video_frames(path, indices, L)
    monkeypatch.undo()
    monkeypatch.setattr(media, "SEEK_MIN_FRAMES", 10**9)  # the former path: decode from the first frame
    from_start = media.decode_video_frames(path, indices, L)
    assert np.array_equal(seeked, from_start)
    assert [round(int(f[0, 0, 0]) / 5) for f in seeked] == [i % 50 for i in indices]  # these frames, not neighbours
    with pytest.raises(media.MediaError, match="only 160 frames decodable, frame 170 needed") as err:
        media.decode_video_frames(path, [150, 170], L)
    assert err.value.code == "too_short"
