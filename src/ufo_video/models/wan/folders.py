"""Wan model folders: detection, configs-only inspection (variant, tasks, experts, size rules),
strict loading of the diffusers layout and of a single-file transformer with Wan's original names,
meta-device building and header shapes. The behaviour lives in `adapter.py`; this is its folder side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.errors import ModelLoadError
from ufo_video.models.wan import layout as wan_layout
from ufo_video.models.base import COMPONENTS
from ufo_video.models.info import ModelInfo, SizeRules
from ufo_video.models.components import folder_has_weights, load_image_processor, load_tokenizer, load_transformers_strict
from ufo_video.models.configs import component_class_is, init_kwargs, read_json, read_model_index
from ufo_video.models.weights import build_on_meta, find_weight_files, load_strict, read_header_shapes

#: what `WanPipeline.__call__` pads prompts to (the I2V 2.1 attention assumes exactly this many)
MAX_SEQUENCE_LENGTH = 512
SINGLE_FILE_NAME = "wan-original.safetensors"
PIPELINE_CLASSES = {"WanPipeline", "WanImageToVideoPipeline"}
SCHEDULER_CLASSES = ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler")
#: mask channels of the I2V conditioning: the VAE's temporal factor (one per frame of a latent frame)
MASK_CHANNELS = 4


class WanFolders:
    """The class-level (folder) half of `WanAdapter`."""

    family = "wan"
    display_name = "Wan 2.1/2.2"

    # ---- folders -------------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        return component_class_is(path, "transformer", "WanTransformer3DModel")

    @classmethod
    def describe_folder(cls) -> str:
        return "model_index.json + transformer/config.json with a WanTransformer3DModel config (a '-Diffusers' folder)"

    @classmethod
    def _index(cls, path: Path) -> dict[str, Any]:
        return read_model_index(path, PIPELINE_CLASSES, "a Wan '-Diffusers' folder")

    @staticmethod
    def _has(index: dict[str, Any], name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None

    @classmethod
    def _transformer_config(cls, path: Path, expert: str = "transformer") -> dict[str, Any]:
        from diffusers import WanTransformer3DModel

        return init_kwargs(read_json(path / expert / "config.json"), WanTransformer3DModel)

    @classmethod
    def _vae_config(cls, path: Path) -> dict[str, Any]:
        from diffusers import AutoencoderKLWan

        return init_kwargs(read_json(path / "vae" / "config.json"), AutoencoderKLWan)

    @classmethod
    def inspect(cls, path: Path) -> ModelInfo:
        path = Path(path)
        index = cls._index(path)
        experts = ["transformer"] + (["transformer_2"] if cls._has(index, "transformer_2") else [])
        boundary = index.get("boundary_ratio")
        if (boundary is None) != (len(experts) == 1):
            have = "a transformer_2 entry" if len(experts) > 1 else "no transformer_2 entry"
            raise ModelLoadError(
                f"{path / 'model_index.json'}: boundary_ratio={boundary!r} with {have}; a Wan 2.2 A14B folder has "
                "both (two experts), a Wan 2.1 / TI2V folder neither"
            )
        configs_only = not cls.has_weights(path)
        needed = [*experts, "vae", "scheduler"] + ([] if configs_only else ["text_encoder", "tokenizer"])
        for sub in needed:
            if not (path / sub).is_dir():
                what = "the low-noise expert of this Wan 2.2 A14B model" if sub == "transformer_2" else "a Wan component"
                raise ModelLoadError(f"{path}: missing subfolder '{sub}/' ({what})")
        tcfg = cls._transformer_config(path)
        vcfg = cls._vae_config(path)
        z = int(vcfg.get("z_dim", 16))
        in_ch = int(tcfg.get("in_channels", z))
        expand = bool(index.get("expand_timesteps"))
        image_conditioned = in_ch == 2 * z + MASK_CHANNELS
        if not (in_ch == z or image_conditioned):
            raise ModelLoadError(
                f"{path / 'transformer' / 'config.json'}: in_channels={in_ch} fits neither text-to-video ({z}) nor "
                f"image-to-video ({2 * z + MASK_CHANNELS}) for the VAE's z_dim={z}"
            )
        if expand:
            variant, tasks = "ti2v", ("t2v", "i2v")
        elif len(experts) > 1:
            variant, tasks = ("a14b-i2v", ("i2v",)) if image_conditioned else ("a14b", ("t2v",))
        else:
            variant, tasks = ("i2v", ("i2v",)) if image_conditioned else ("t2v", ("t2v",))
        uses_clip = tcfg.get("image_dim") is not None
        if uses_clip and not configs_only:
            for sub in ("image_encoder", "image_processor"):
                if not (path / sub).is_dir():
                    raise ModelLoadError(
                        f"{path}: missing subfolder '{sub}/': this Wan 2.1 I2V transformer takes a CLIP image embedding "
                        f"(transformer/config.json image_dim={tcfg.get('image_dim')}), so the folder needs its image encoder"
                    )
        layout = "configs-only" if configs_only else cls._layout(path, experts)
        patch = tcfg.get("patch_size") or [1, 2, 2]
        rules = SizeRules(
            spatial_factor=int(vcfg.get("scale_factor_spatial", 8)),
            temporal_factor=int(vcfg.get("scale_factor_temporal", 4)),
            patch_size=int(patch[-1]),
            vae_name="Wan VAE",
        )
        extra = {
            "transformer_config": tcfg, "experts": experts, "boundary_ratio": boundary, "expand_timesteps": expand,
            "uses_clip": uses_clip, "spatial_factor": rules.spatial_factor, "temporal_factor": rules.temporal_factor,
            "pipeline": index["_class_name"],
        }  # fmt: skip
        return ModelInfo(cls.family, path, layout, variant, z, extra=extra, tasks=tasks, rules=rules)

    @classmethod
    def _layout(cls, path: Path, experts: list[str]) -> str:
        """'single-file' when an expert holds Wan's original single file (ComfyUI's), else 'diffusers'."""
        kinds = {("single-file" if (path / e / SINGLE_FILE_NAME).is_file() else "diffusers") for e in experts}
        if len(kinds) > 1:
            raise ModelLoadError(f"{path}: the experts mix a single original file and diffusers shards; use one layout")
        return kinds.pop()

    @classmethod
    def _expert_files(cls, path: Path, expert: str) -> list[Path]:
        single = path / expert / SINGLE_FILE_NAME
        return [single] if single.is_file() else find_weight_files(path / expert)

    @classmethod
    def has_weights(cls, path: Path) -> bool:
        return folder_has_weights(Path(path), ("transformer", "vae", "text_encoder"))

    @classmethod
    def build_meta(cls, path: Path) -> dict[str, nn.Module]:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        path = Path(path)
        info = cls.inspect(path)
        modules: dict[str, nn.Module] = {}
        for expert in info.extra["experts"]:
            tcfg = cls._transformer_config(path, expert)
            modules[expert] = build_on_meta(lambda tcfg=tcfg: WanTransformer3DModel(**tcfg))
        vcfg = cls._vae_config(path)
        modules["vae"] = build_on_meta(lambda: AutoencoderKLWan(**vcfg))
        for name, auto in (("text_encoder", "UMT5EncoderModel"), ("image_encoder", "CLIPVisionModel")):
            if (path / name / "config.json").is_file():
                import transformers

                cfg = transformers.AutoConfig.from_pretrained(str(path / name))
                model_cls = getattr(transformers, read_json(path / name / "config.json").get("architectures", [auto])[0], None)
                model_cls = model_cls or getattr(transformers, auto)
                module = build_on_meta(lambda cfg=cfg, model_cls=model_cls: model_cls(cfg))
                # from_pretrained ties UMT5's input embeddings to `shared`; a bare constructor on
                # meta does not, which would count the 1.05B-parameter embedding twice
                module.tie_weights()
                modules[name] = module
        return modules

    @classmethod
    def weight_shapes(cls, path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
        path = Path(path)
        info = cls.inspect(path)
        out = {}
        for expert in info.extra["experts"]:
            headers = read_header_shapes(cls._expert_files(path, expert))
            rename = wan_layout.original_to_diffusers_key if info.layout == "single-file" else (lambda k: k)
            out[expert] = {rename(k): v[0] for k, v in headers.items()}
        out["vae"] = {k: v[0] for k, v in read_header_shapes(find_weight_files(path / "vae")).items()}
        return out

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        dtype: torch.dtype = torch.float32,
        components: tuple[str, ...] = COMPONENTS,
        info: ModelInfo | None = None,
    ) -> Any:
        """Strict loading of what is asked. `transformer` / `transformer_2` name the experts (both
        are loaded for inference by the default components); the image encoder comes with the
        text encoder or when asked (`image_encoder`), when the model has one."""
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        path = Path(path)
        info = info or cls.inspect(path)
        if info.layout == "configs-only":
            raise ModelLoadError(f"{path}: holds configs only (no weights); `model check --meta` reads it, nothing loads it")
        wanted = set(components)
        if wanted == set(COMPONENTS):  # the default: everything the model has
            wanted |= {"transformer_2", "image_encoder"}
        loaded: dict[str, Any] = {}
        for expert in info.extra["experts"]:
            if expert not in wanted:
                continue
            tcfg = cls._transformer_config(path, expert)
            single = info.layout == "single-file"
            loaded[expert] = load_strict(
                lambda tcfg=tcfg: WanTransformer3DModel(**tcfg),
                path / expert,
                rename=wan_layout.original_to_diffusers_key if single else None,
                dtype=dtype,
            )
        if "vae" in wanted:
            vcfg = cls._vae_config(path)
            loaded["vae"] = load_strict(lambda: AutoencoderKLWan(**vcfg), path / "vae", dtype=dtype)
        if "text_encoder" in wanted:
            loaded["text_encoder"] = _load_transformers_model(path / "text_encoder", "UMT5EncoderModel", dtype)
        if "tokenizer" in wanted:
            loaded["tokenizer"] = load_tokenizer(path / "tokenizer")
        if "scheduler" in wanted:
            loaded["scheduler"] = _load_scheduler(path / "scheduler")
        if info.extra["uses_clip"] and "image_encoder" in wanted:
            loaded["image_encoder"] = _load_transformers_model(path / "image_encoder", "CLIPVisionModel", dtype)
            loaded["image_processor"] = load_image_processor(path / "image_processor")
        return cls(info, loaded)

    @classmethod
    def fingerprint_sources(cls, path: Path) -> dict[str, dict[str, Any]]:
        """Latents and conditioning depend on the transformer and VAE configs, the VAE weights and
        (I2V 2.1) the image encoder; text embeddings on the text encoder and tokenizer."""
        video: dict[str, Any] = {
            "transformer_config": ("text", path / "transformer" / "config.json"),
            "vae_config": ("text", path / "vae" / "config.json"),
            "vae_weights": ("files", path / "vae", (".safetensors", ".json")),
        }
        if (path / "image_encoder").is_dir():
            video["image_encoder"] = ("files", path / "image_encoder", None)
            video["image_processor"] = ("files", path / "image_processor", None)
        text = {"text_encoder": ("files", path / "text_encoder", None), "tokenizer": ("files", path / "tokenizer", None)}
        return {"video": video, "text": text}


def _load_transformers_model(folder: Path, default_class: str, dtype: torch.dtype) -> nn.Module:
    """The class its config names (UMT5 encoder, CLIP vision), strictly."""
    import transformers

    arch = (read_json(folder / "config.json").get("architectures") or [default_class])[0]
    model_cls = getattr(transformers, arch, None) or getattr(transformers, default_class)
    return load_transformers_strict(folder, model_cls, dtype, arch)


def _load_scheduler(folder: Path) -> Any:
    import diffusers

    cfg = read_json(folder / "scheduler_config.json")
    name = cfg.get("_class_name", "UniPCMultistepScheduler")
    if name not in SCHEDULER_CLASSES:
        raise ModelLoadError(f"{folder / 'scheduler_config.json'}: scheduler {name!r} is not one of {', '.join(SCHEDULER_CLASSES)}")
    return getattr(diffusers, name).from_config(cfg)
