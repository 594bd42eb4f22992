"""Find and load the networks behind the field's (VBench's) metrics, offline, or say why not.

VBench scores subject consistency with DINO ViT-B/16 features, background consistency with CLIP
ViT-B/32 image features and dynamic degree with RAFT optical flow. We take the same networks from
the libraries that ship them (transformers for DINO and CLIP, torchvision for RAFT) and never
download anything: weights come either from a folder the user names (`--backbones DIR`) or, when
none is named, from the user's own caches. A network that cannot be found or loaded is returned as
`Unavailable` with the reason, so a metric is reported as unavailable, never faked.

`--backbones DIR` layout (each part optional; only DIR is searched when it is given):

    DIR/dino/   a transformers folder (config.json + weights) of a ViTModel with DINO weights
                (VBench's: facebook/dino-vitb16) or a Dinov2Model; `save_pretrained` writes one
    DIR/clip/   a transformers folder of CLIPVisionModelWithProjection or of a full CLIPModel
                (VBench's: openai/clip-vit-base-patch32)
    DIR/raft/   raft_large.safetensors or raft_small.safetensors (or .pth): a state_dict of
                torchvision's raft_large / raft_small (VBench's: RAFT trained on Chairs+Things,
                torchvision's Raft_Large_Weights.C_T_V1)

Without DIR: facebook/dino-vitb16 and openai/clip-vit-base-patch32 from the Hugging Face cache,
and raft_large_C_T_V1-22a6c225.pth from the torch hub cache ($TORCH_HOME/hub/checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKBONES = ("dino", "clip", "raft")
DINO_REPO = "facebook/dino-vitb16"
CLIP_REPO = "openai/clip-vit-base-patch32"
RAFT_HUB_FILE = "raft_large_C_T_V1-22a6c225.pth"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass
class Backbone:
    """A loaded network: `kind` (dino / clip / raft), the model (eval mode), where it came from
    and its architecture (class name, or raft_large / raft_small)."""

    kind: str
    model: Any
    source: str
    architecture: str

    def describe(self) -> dict:
        return {"available": True, "source": self.source, "architecture": self.architecture}


@dataclass
class Unavailable:
    kind: str
    reason: str

    def describe(self) -> dict:
        return {"available": False, "reason": self.reason}


def load_backbone(kind: str, folder: Path | None = None, device: str = "cpu") -> Backbone | Unavailable:
    """Load one backbone from `folder/<kind>` when `folder` is given, else from the caches."""
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone {kind!r}; expected one of {BACKBONES}")
    try:
        found = {"dino": _load_dino, "clip": _load_clip, "raft": _load_raft}[kind](folder)
    except _Missing as exc:
        return Unavailable(kind, str(exc))
    except Exception as exc:  # a broken or foreign file: say which and why, don't stop the eval
        return Unavailable(kind, f"cannot load the {kind} weights: {type(exc).__name__}: {exc}")
    found.model.to(device).eval()
    return found


class _Missing(Exception):
    """The weights (or the library) are not on this machine."""


def _hf_cached(repo: str) -> Path:
    """The snapshot folder of `repo` in the Hugging Face cache, without any network access."""
    from huggingface_hub import constants, try_to_load_from_cache

    config = try_to_load_from_cache(repo, "config.json", cache_dir=constants.HF_HUB_CACHE)
    if not isinstance(config, str):
        raise _Missing(f"{repo} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
                       "download it once with `hf download`, or pass --backbones DIR")
    return Path(config).parent


def _transformers_folder(folder: Path | None, kind: str, repo: str) -> Path:
    if folder is None:
        return _hf_cached(repo)
    path = folder / kind
    if not (path / "config.json").is_file():
        raise _Missing(f"{path}/config.json not found (see `ufo-video eval --help` for the --backbones layout)")
    return path


def _complete(loaded: tuple, path: Path):
    """The model of `from_pretrained(..., output_loading_info=True)`, refused when some of its
    weights were not in the folder (transformers would leave them random: a fake metric)."""
    model, info = loaded
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise _Missing(f"{path}: weights missing for {len(missing)} parameter(s) ({', '.join(missing[:3])}, ...)")
    return model


def _load_dino(folder: Path | None) -> Backbone:
    from transformers import AutoConfig, Dinov2Model, ViTModel

    path = _transformers_folder(folder, "dino", DINO_REPO)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type == "vit":
        model = _complete(ViTModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False,
                                                   output_loading_info=True), path)
    elif config.model_type == "dinov2":
        model = _complete(Dinov2Model.from_pretrained(path, local_files_only=True, output_loading_info=True), path)
    else:
        raise _Missing(f"{path}: a {config.model_type!r} model, expected a DINO ViT (vit) or dinov2 folder")
    return Backbone("dino", model, str(path), type(model).__name__)


def _load_clip(folder: Path | None) -> Backbone:
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    path = _transformers_folder(folder, "clip", CLIP_REPO)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type == "clip":  # a full CLIPModel: its vision tower and the image projection
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        model = CLIPVisionModelWithProjection.from_pretrained(path, config=vision, local_files_only=True,
                                                              output_loading_info=True)
    elif config.model_type == "clip_vision_model":
        model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True, output_loading_info=True)
    else:
        raise _Missing(f"{path}: a {config.model_type!r} model, expected a CLIP (vision) folder")
    model = _complete(model, path)
    return Backbone("clip", model, str(path), type(model).__name__)


def _import_raft():
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception as exc:  # not installed, or a build that does not match torch
        raise _Missing(f"torchvision cannot be imported ({type(exc).__name__}: {exc}); "
                       "install the torchvision build that matches your torch") from exc
    return raft_large, raft_small


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def _load_raft(folder: Path | None) -> Backbone:
    if folder is None:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / RAFT_HUB_FILE
        if not path.is_file():
            raise _Missing(f"{path} not found (torchvision's raft_large C_T_V1 weights); pass --backbones DIR")
        arch = "raft_large"
    else:
        candidates = sorted(p for p in (folder / "raft").glob("raft_*") if p.suffix in _WEIGHT_SUFFIXES)
        candidates = [p for p in candidates if p.stem in ("raft_large", "raft_small")]
        if not candidates:
            raise _Missing(f"no raft_large or raft_small weights ({', '.join(_WEIGHT_SUFFIXES)}) in {folder / 'raft'}")
        path, arch = candidates[0], candidates[0].stem
    raft_large, raft_small = _import_raft()
    model = (raft_large if arch == "raft_large" else raft_small)(weights=None, progress=False)
    model.load_state_dict(_read_state_dict(path), strict=True)
    return Backbone("raft", model, str(path), arch)
