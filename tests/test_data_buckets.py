"""Bucket maths, frame sampling and short-video policy, caption dropout — against hand-computed values."""

from __future__ import annotations

import pytest

from ufo_video.data import buckets
from ufo_video.data.sampling import drop_text, frame_indices, plan_moving, short_fix_hint, static_frame_index


def test_aspect_family_is_about_512_squared_and_symmetric() -> None:
    fam = buckets.ASPECT_FAMILY
    assert (512, 512) in fam and (384, 672) in fam and (1024, 256) in fam and (256, 1024) in fam
    for h, w in fam:
        assert h % 32 == 0 and w % 32 == 0 and 0.85 * 512 * 512 <= h * w <= 512 * 512


@pytest.mark.parametrize(
    "hw, side, expected",
    [
        ((720, 1280), 512, (384, 672)),  # 16:9 -> 384x672 at base 512
        ((720, 1280), 256, (192, 336)),
        ((1080, 1080), 1024, (1024, 1024)),
        ((64, 32), 32, (48, 16)),  # 2:1 -> (704, 352) * 32/512 = (44, 22) -> multiples of 16
        ((100, 1000), 512, (256, 1024)),  # extreme ratios clamp to the family's ends
    ],
)
def test_bucket_sizes(hw, side, expected) -> None:
    size = buckets.scaled_size(buckets.nearest_ratio(*hw), side)
    assert size == expected and size[0] % 16 == 0 and size[1] % 16 == 0


def test_frames_under_token_budget() -> None:
    # frames * side^2 <= 49 * 512^2, rounded down to 4k+1
    assert buckets.frames_for_side(512, 49, 512, True) == 49
    assert buckets.frames_for_side(640, 49, 512, True) == 29  # 49*0.64 = 31.36 -> 31 -> 29
    assert buckets.frames_for_side(1024, 49, 512, True) == 9  # 12.25 -> 12 -> 9
    assert buckets.frames_for_side(256, 49, 512, True) == 49  # never more than n_frames
    assert buckets.frames_for_side(1024, 49, 512, False) == 49
    assert [buckets.floor_4k1(n) for n in (1, 4, 5, 8, 9, 48)] == [1, 1, 5, 5, 9, 45]


def test_side_choices() -> None:
    assert buckets.side_choices(1024, True) == (256, 384, 512, 640, 768, 896, 1024)
    assert buckets.side_choices(512, True) == (256, 384, 512)
    assert buckets.side_choices(128, True) == (128,)
    assert buckets.side_choices(512, False) == (512,)


def test_short_video_policies() -> None:
    # 10 frames; 9 frames at stride 2 need 17
    assert plan_moving(10, 8.0, 9, 2, None, "skip") is None
    reduced = plan_moving(10, 8.0, 9, 2, None, "reduce_stride")
    assert (reduced.step, reduced.frame_cap) == (1.0, 9) and "step reduced to 1" in reduced.notice
    fewer = plan_moving(10, 8.0, 9, 2, None, "fewer_frames")
    assert (fewer.step, fewer.frame_cap) == (2.0, 5) and "using 5 frames" in fewer.notice
    assert plan_moving(5, 8.0, 9, 1, None, "reduce_stride") is None  # cannot fit even at stride 1
    ok = plan_moving(17, 8.0, 9, 2, None, "skip")
    assert (ok.step, ok.frame_cap, ok.notice) == (2.0, 9, None)
    assert "5 frames at stride 2 or 9 frames at stride 1 would fit" in short_fix_hint(10, 9, 2)


def test_fps_resampling_and_no_repeated_frames() -> None:
    p = plan_moving(100, 24.0, 5, 1, 8.0, "skip")
    idx = frame_indices(100, 5, p.step, 0, 0, 0)
    assert p.step == 3.0 and [y - x for x, y in zip(idx, idx[1:])] == [3, 3, 3, 3]  # 24 fps -> 8 fps
    slow = plan_moving(100, 4.0, 5, 1, 8.0, "skip")  # source slower than target: consecutive, noticed
    assert slow.step == 1.0 and "below data.video_sample_fps" in slow.notice
    idx = frame_indices(100, 5, slow.step, 0, 0, 3)
    assert len(set(idx)) == 5


def test_frame_indices_deterministic_and_in_range() -> None:
    a = frame_indices(50, 9, 2.0, seed=1, epoch=2, index=3)
    assert a == frame_indices(50, 9, 2.0, seed=1, epoch=2, index=3)
    assert a[-1] < 50 and [y - x for x, y in zip(a, a[1:])] == [2] * 8
    assert frame_indices(17, 9, 2.0, 1, 2, 3) == list(range(0, 17, 2))


def test_static_frame_choice() -> None:
    assert static_frame_index(49, "middle", 0, 0, 0) == 24
    picks = {static_frame_index(49, "random", 0, 0, i) for i in range(50)}
    assert len(picks) > 10 and all(0 <= p < 49 for p in picks)
    assert static_frame_index(49, "random", 0, 0, 7) == static_frame_index(49, "random", 0, 0, 7)


def test_text_dropout_rate_and_determinism() -> None:
    drops = [drop_text(42, 0, i, 0.1) for i in range(4000)]
    assert 0.085 < sum(drops) / len(drops) < 0.115
    assert drops == [drop_text(42, 0, i, 0.1) for i in range(4000)]
    assert drops != [drop_text(42, 1, i, 0.1) for i in range(4000)]  # a new draw each epoch
    assert not any(drop_text(42, 0, i, 0.0) for i in range(100))
    assert all(drop_text(42, 0, i, 1.0) for i in range(100))
