"""The field's (VBench's) temporal metrics, with VBench's definitions, on networks we load ourselves.

Papers, UFO's included, report VBench's subject consistency, background consistency, temporal
flickering, motion smoothness and dynamic degree. The `vbench` package cannot be installed next to
diffusers (its pins conflict), so the definitions are re-implemented here from VBench's code
(Vchitect/VBench, Apache-2.0, read at commit 45e79ec; Huang et al., "VBench", CVPR 2024) and fed by
the backbones of `ufo_video.eval.backbones`. Each definition is cited in `FIELD_DEFINITIONS`, which
`ufo-video eval --json` prints. Motion smoothness needs VBench's AMT frame-interpolation network,
which no library we use ships: `motion_smoothness` is a documented proxy (RAFT flow + linear-motion
interpolation), marked `vbench_exact: false`, and is not VBench's number.

The maths take feature / flow callables, so tests can check each definition with known answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ufo_video.errors import UfoError

_VBENCH = "Vchitect/VBench @45e79ec"
# Which backbone each metric needs (None: pixels only).
FIELD_METRICS: dict[str, str | None] = {
    "subject_consistency": "dino",
    "background_consistency": "clip",
    "temporal_flickering": None,
    "motion_smoothness": "raft",
    "dynamic_degree": "raft",
}
RAFT_ITERS = 20  # VBench runs RAFT with iters=20
RAFT_MIN_SIDE = 128  # torchvision's RAFT: 8x downsampling, then a 4-level correlation pyramid
DYNAMIC_TOP_FRACTION = 0.05
DYNAMIC_THRESHOLD_PX = 6.0  # at a short side of 256 px, scaled linearly
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

_CONSISTENCY = ("mean over frames t >= 1 of (max(0, cos(f_t, f_{{t-1}})) + max(0, cos(f_t, f_0))) / 2, "
                "f = L2-normalised {features}")
FIELD_DEFINITIONS: dict[str, dict] = {
    "subject_consistency": {
        "range": "[0, 1] (1 = every frame's features equal the first and the previous frame's)",
        "better": "higher",
        "meaning": _CONSISTENCY.format(features="DINO CLS features (frames resized to a short side of "
                                       "224, ImageNet normalisation)"),
        "backbone": "dino (VBench: DINO ViT-B/16, facebook/dino-vitb16)",
        "source": f"{_VBENCH} vbench/subject_consistency.py",
        "vbench_exact": True,
    },
    "background_consistency": {
        "range": "[0, 1]",
        "better": "higher",
        "meaning": _CONSISTENCY.format(features="CLIP image embeddings (bicubic resize + centre crop to "
                                       "224, CLIP normalisation)"),
        "backbone": "clip (VBench: CLIP ViT-B/32, openai/clip-vit-base-patch32)",
        "source": f"{_VBENCH} vbench/background_consistency.py",
        "vbench_exact": True,
    },
    "temporal_flickering": {
        "range": "[0, 1] (1 = no pixel changes)",
        "better": "higher",
        "meaning": "(255 - mean over consecutive pairs of the mean absolute pixel difference) / 255; VBench "
                   "applies it to videos of static scenes, where any change is flicker",
        "backbone": None,
        "source": f"{_VBENCH} vbench/temporal_flickering.py",
        "vbench_exact": True,
    },
    "motion_smoothness": {
        "range": "[0, 1] (1 = the dropped frames are re-made exactly)",
        "better": "higher",
        "meaning": "PROXY, not VBench's number. VBench drops the odd frames, re-makes them from the even "
                   "ones with the AMT-S interpolation network and scores (255 - mean absolute error) / 255. "
                   "Here each odd frame t is re-made from frames t-1 and t+1 by warping both with RAFT flow "
                   "under linear motion (Super SloMo's intermediate-flow approximation, t = 1/2: "
                   "F_t->0 = (F_1->0 - F_0->1) / 4, F_t->1 = -F_t->0) and averaging, scored the same way",
        "backbone": "raft (instead of VBench's AMT-S)",
        "source": f"{_VBENCH} vbench/motion_smoothness.py (scoring); interpolation is ours",
        "vbench_exact": False,
    },
    "dynamic_degree": {
        "range": "false / true (the share of dynamic videos is VBench's dynamic degree)",
        "better": "higher",
        "meaning": "frames taken every round(fps / 8); per pair, the mean of the top 5 % RAFT flow magnitudes "
                   "(20 iterations); dynamic when at least round(4 * frames / 16) pairs exceed "
                   "6 * min(H, W) / 256 px (at least 1 pair: VBench calls a 2-frame clip dynamic regardless)",
        "backbone": "raft (VBench: RAFT things, torchvision raft_large C_T_V1)",
        "source": f"{_VBENCH} vbench/dynamic_degree.py",
        "vbench_exact": True,
    },
}

Flow = Callable[[np.ndarray, np.ndarray], np.ndarray]


def parse_metric_names(text: str) -> list[str]:
    """`--metrics a,b` → validated names in the given order (no repeats)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIELD_METRICS]
    if not names or unknown:
        raise UfoError(f"--metrics: unknown {unknown or 'empty list'}; choose from {', '.join(FIELD_METRICS)}")
    return list(dict.fromkeys(names))


# --- definitions on features / pixels / flows ---------------------------------------------------

def consistency_terms(features):
    """Per frame t >= 1: (max(0, cos(f_t, f_{t-1})) + max(0, cos(f_t, f_0))) / 2, from features [F, D]."""
    import torch

    f = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float64), dim=-1)
    if f.shape[0] < 2:
        raise UfoError("consistency needs at least 2 frames")
    prev = (f[1:] * f[:-1]).sum(-1).clamp(min=0)
    first = (f[1:] * f[:1]).sum(-1).clamp(min=0)
    return (prev + first) / 2


def feature_consistency(features) -> float:
    """VBench's subject/background consistency of per-frame features [F, D]: the mean of
    `consistency_terms` (VBench's per-video value)."""
    return float(consistency_terms(features).mean())


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench's temporal flickering score of uint8 frames [F, H, W, 3]."""
    mae = [np.abs(frames[t + 1].astype(np.float32) - frames[t]).mean() for t in range(len(frames) - 1)]
    return float((255.0 - np.mean(mae)) / 255.0)


def dynamic_degree(frames: np.ndarray, fps: float | None, flow: Flow) -> bool:
    """VBench's dynamic-degree decision for one video (see FIELD_DEFINITIONS)."""
    step = max(1, round(fps / 8)) if fps else 1
    kept = frames[::step]
    if len(kept) < 2:
        kept = frames
    h, w = kept.shape[1:3]
    flows = flow(kept[:-1], kept[1:])
    mag = np.hypot(flows[..., 0], flows[..., 1]).reshape(len(flows), -1)
    top = max(1, int(h * w * DYNAMIC_TOP_FRACTION))
    scores = np.sort(mag, axis=1)[:, -top:].mean(axis=1)
    moving = int(np.count_nonzero(scores > DYNAMIC_THRESHOLD_PX * min(h, w) / 256.0))
    return moving >= max(1, round(4 * len(kept) / 16))


def warp(images, flows):
    """Backward warp: out(x) = image(x + flow(x)), bilinear, border values repeated.
    images float [N, C, H, W]; flows [N, 2, H, W] in pixels (dx, dy)."""
    import torch

    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=images.dtype), torch.arange(w, dtype=images.dtype), indexing="ij")
    x = xs + flows[:, 0]
    y = ys + flows[:, 1]
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def motion_smoothness_proxy(frames: np.ndarray, flow: Flow) -> float:
    """The documented proxy of VBench's motion smoothness (see FIELD_DEFINITIONS)."""
    import torch

    odd = np.arange(1, len(frames) - 1, 2)
    if len(odd) == 0:
        raise UfoError("motion smoothness needs at least 3 frames")
    before, after = frames[odd - 1], frames[odd + 1]
    f01 = torch.from_numpy(flow(before, after)).permute(0, 3, 1, 2).double()
    f10 = torch.from_numpy(flow(after, before)).permute(0, 3, 1, 2).double()
    ft0 = (f10 - f01) / 4
    as_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double()  # noqa: E731
    made = (warp(as_t(before), ft0) + warp(as_t(after), -ft0)) / 2
    made = made.round().clamp(0, 255)  # a re-made frame is an image, as VBench's is
    err = (made - as_t(frames[odd])).abs().mean()
    return float((255.0 - err) / 255.0)


# --- backbones → features / flow ----------------------------------------------------------------

def _resize_short(x, size: int, mode: str):
    """Resize [N, C, H, W] (0..255) so the short side is `size` (torchvision's rule), as uint8 would."""
    import torch

    h, w = x.shape[-2:]
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    out = torch.nn.functional.interpolate(x, size=new, mode=mode, align_corners=False, antialias=False)
    return out.round().clamp(0, 255)


def _normalise(x, stats):
    import torch

    mean, std = (torch.tensor(s, dtype=x.dtype).view(1, 3, 1, 1) for s in stats)
    return (x / 255.0 - mean) / std


def _batches(frames: np.ndarray, size: int = 16):
    import torch

    for i in range(0, len(frames), size):
        yield torch.from_numpy(np.ascontiguousarray(frames[i : i + size])).permute(0, 3, 1, 2).float()


def dino_features(model, frames: np.ndarray):
    """CLS features after the final norm (what DINO's hub model returns), one row per frame."""
    import torch

    size = int(model.config.image_size)
    device = next(model.parameters()).device
    kwargs = {"interpolate_pos_encoding": True} if type(model).__name__ == "ViTModel" else {}
    out = []
    with torch.no_grad():
        for x in _batches(frames):
            x = _normalise(_resize_short(x, size, "bilinear"), _IMAGENET).to(device)
            out.append(model(pixel_values=x, **kwargs).last_hidden_state[:, 0].float().cpu())
    return torch.cat(out)


def clip_features(model, frames: np.ndarray):
    """Projected CLIP image embeddings (CLIP's encode_image), one row per frame."""
    import torch

    size = int(model.config.image_size)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for x in _batches(frames):
            x = _resize_short(x, size, "bicubic")
            h, w = x.shape[-2:]
            top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
            x = _normalise(x[..., top : top + size, left : left + size], _CLIP_NORM).to(device)
            out.append(model(pixel_values=x).image_embeds.float().cpu())
    return torch.cat(out)


def raft_flow(model, iters: int = RAFT_ITERS, batch: int = 4) -> Flow:
    """A flow callable from a torchvision RAFT: frames a, b uint8 [N, H, W, 3] → [N, H, W, 2] such
    that a(x) ≈ b(x + flow). Frames are edge-padded to a multiple of 8, as VBench does, and to at
    least RAFT_MIN_SIDE (RAFT's correlation pyramid needs it; small test videos)."""
    import torch

    device = next(model.parameters()).device

    def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h, w = a.shape[1:3]
        ph, pw = max(RAFT_MIN_SIDE - h, (-h) % 8), max(RAFT_MIN_SIDE - w, (-w) % 8)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        out = []
        with torch.no_grad():
            for xa, xb in zip(_batches(a, batch), _batches(b, batch)):
                xa, xb = (torch.nn.functional.pad(x / 127.5 - 1, pad, mode="replicate").to(device) for x in (xa, xb))
                f = model(xa, xb, num_flow_updates=iters)[-1]
                out.append(f[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w].permute(0, 2, 3, 1).float().cpu())
        return torch.cat(out).numpy()

    return flow


# --- one scorer for many videos -----------------------------------------------------------------

class FieldScorer:
    """Loads the backbones the requested metrics need once, then scores videos.
    `unavailable` maps each metric that cannot be computed here to the reason."""

    def __init__(self, names: Sequence[str], backbones_dir: Path | None = None, device: str | None = None):
        from ufo_video.eval.backbones import Unavailable, load_backbone

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.names, self.device, self.backbones_dir = list(names), device, backbones_dir
        kinds = sorted({FIELD_METRICS[n] for n in self.names} - {None})
        self.backbones = {k: load_backbone(k, backbones_dir, device) for k in kinds}
        self.unavailable = {
            n: f"unavailable: {self.backbones[k].reason}"
            for n in self.names if (k := FIELD_METRICS[n]) and isinstance(self.backbones[k], Unavailable)
        }

    def describe(self) -> dict:
        """The report's "field_metrics" section: what was asked, the backbones, the definitions."""
        return {
            "requested": self.names,
            "device": self.device,
            "backbones_dir": None if self.backbones_dir is None else str(self.backbones_dir),
            "backbones": {k: b.describe() for k, b in self.backbones.items()},
            "unavailable": self.unavailable,
            "definitions": {n: FIELD_DEFINITIONS[n] for n in self.names},
        }

    def score(self, frames: np.ndarray, fps: float | None) -> tuple[dict, dict]:
        """({metric: value, None when not computed}, {metric: why not}) for one video."""
        from ufo_video.eval.backbones import Backbone

        values: dict = {}
        notes = dict(self.unavailable)
        raft = self.backbones.get("raft")
        flow = raft_flow(raft.model) if isinstance(raft, Backbone) else None
        for name in self.names:
            values[name] = None
            if name in notes:
                continue
            if name == "subject_consistency":
                values[name] = feature_consistency(dino_features(self.backbones["dino"].model, frames))
            elif name == "background_consistency":
                values[name] = feature_consistency(clip_features(self.backbones["clip"].model, frames))
            elif name == "temporal_flickering":
                values[name] = temporal_flickering(frames)
            elif name == "dynamic_degree":
                values[name] = dynamic_degree(frames, fps, flow)
            elif len(frames) < 3:
                notes[name] = "not computed: motion smoothness needs at least 3 frames"
            else:
                values[name] = motion_smoothness_proxy(frames, flow)
        return values, notes
