"""LTX-2 model folders (diffusers' `Lightricks/LTX-2` layout): detection, configs-only inspection
(variant, version, base or distilled, size rules), strict loading of all eight components,
meta-device building and header shapes. The behaviour lives in `adapter.py`; this is its folder side.

Layouts: "diffusers", "single-file" (the transformer as one file with LTX-2's original names, as
ComfyUI users have it, read through diffusers' converter: single_file.py) and "configs-only".

What a folder is, read from its configs alone (never from its name):
- variant: the pipeline class in `model_index.json` (`LTX2Pipeline` -> t2v, `LTX2ImageToVideoPipeline`
  -> i2v). LTX-2 has ONE checkpoint for both tasks, so either folder makes both kinds of video;
- version: "2.3" when the connectors project per modality (`per_modality_projections`), else "2.0";
- distilled: the scheduler has no dynamic shift (diffusers' conversion script writes the distilled
  checkpoints' scheduler so); the weights' architecture is the same as the base checkpoint's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.errors import ModelLoadError
from ufo_video.models.base import COMPONENTS
from ufo_video.models.info import ModelInfo, SizeRules
from ufo_video.models.components import folder_has_weights, load_transformers_strict
from ufo_video.models.configs import component_class_is, init_kwargs, read_json, read_model_index
from ufo_video.models.ltx2 import single_file
from ufo_video.models.weights import build_on_meta, find_weight_files, load_strict, read_header_shapes

PIPELINE_VARIANTS = {"LTX2Pipeline": "t2v", "LTX2ImageToVideoPipeline": "i2v"}
#: diffusers components (ModelMixin, saved with their own state-dict names): folder -> allowed classes
DIFFUSERS_PARTS: dict[str, tuple[str, ...]] = {
    "transformer": ("LTX2VideoTransformer3DModel",),
    "vae": ("AutoencoderKLLTX2Video",),
    "audio_vae": ("AutoencoderKLLTX2Audio",),
    "connectors": ("LTX2TextConnectors",),
    "vocoder": ("LTX2Vocoder", "LTX2VocoderWithBWE"),
}
#: every component, in the order the pipelines list them
ALL_PARTS = ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer", "scheduler")
TEXT_ENCODER_CLASSES = ("Gemma3ForConditionalGeneration",)
TOKENIZER_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast")


def _class(name: str) -> type:
    """A diffusers LTX-2 class by name (top-level diffusers or its `pipelines.ltx2` package)."""
    import diffusers
    from diffusers.pipelines import ltx2
    from diffusers.pipelines.ltx2 import vocoder

    for module in (diffusers, ltx2, vocoder):
        if hasattr(module, name):
            return getattr(module, name)
    raise ModelLoadError(f"diffusers has no class {name!r} (LTX-2 needs diffusers >= 0.42)")


class LTX2Folders:
    """The class-level (folder) half of `LTX2Adapter`."""

    family = "ltx2"
    display_name = "LTX-2"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return component_class_is(path, "transformer", "LTX2VideoTransformer3DModel")

    @classmethod
    def describe_folder(cls) -> str:
        return ("model_index.json + transformer/config.json with an LTX2VideoTransformer3DModel config (diffusers' "
                "Lightricks/LTX-2 layout; transformer/ may hold one file with LTX-2's original names instead)")

    @classmethod
    def _index(cls, path: Path) -> dict[str, Any]:
        return read_model_index(path, tuple(PIPELINE_VARIANTS), "a diffusers LTX-2 folder")

    @classmethod
    def _class_of(cls, path: Path, index: dict[str, Any], part: str) -> str:
        entry = index.get(part)
        name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
        allowed = DIFFUSERS_PARTS.get(part) or (TEXT_ENCODER_CLASSES if part == "text_encoder" else TOKENIZER_CLASSES)
        if name not in allowed:
            raise ModelLoadError(f"{path / 'model_index.json'}: {part} is {entry!r}; expected one of {', '.join(allowed)}")
        return name

    @classmethod
    def _config(cls, path: Path, part: str, index: dict[str, Any] | None = None) -> tuple[type, dict[str, Any]]:
        """(class, init kwargs) of a diffusers component from its config."""
        index = index if index is not None else cls._index(path)
        model_cls = _class(cls._class_of(path, index, part))
        return model_cls, init_kwargs(read_json(path / part / "config.json"), model_cls)

    @classmethod
    def inspect(cls, path: Path) -> ModelInfo:
        path = Path(path)
        index = cls._index(path)
        configs_only = not cls.has_weights(path)
        needed = [*DIFFUSERS_PARTS, "scheduler"] + ([] if configs_only else ["text_encoder", "tokenizer"])
        for sub in needed:
            if not (path / sub).is_dir():
                raise ModelLoadError(f"{path}: missing subfolder '{sub}/' (an LTX-2 component)")
        _, tcfg = cls._config(path, "transformer", index)
        _, vcfg = cls._config(path, "vae", index)
        _, ccfg = cls._config(path, "connectors", index)
        scfg = read_json(path / "scheduler" / "scheduler_config.json")
        if scfg.get("_class_name") != "FlowMatchEulerDiscreteScheduler":
            raise ModelLoadError(f"{path / 'scheduler' / 'scheduler_config.json'}: expected FlowMatchEulerDiscreteScheduler "
                                 f"(what the LTX-2 pipelines use), found {scfg.get('_class_name')!r}")  # fmt: skip
        latent = int(vcfg.get("latent_channels", 128))
        if int(tcfg.get("in_channels", latent)) != latent:
            raise ModelLoadError(
                f"{path / 'transformer' / 'config.json'}: in_channels={tcfg.get('in_channels')} differs from the VAE's "
                f"latent_channels={latent}; the folder mixes two models"
            )
        patch = int(tcfg.get("patch_size", 1))
        rules = SizeRules(
            spatial_factor=int(vcfg.get("spatial_compression_ratio", 32)),
            temporal_factor=int(vcfg.get("temporal_compression_ratio", 8)),
            patch_size=patch,
            vae_name="LTX-2 video VAE",
        )
        version = "2.3" if ccfg.get("per_modality_projections") else "2.0"
        distilled = not scfg.get("use_dynamic_shifting", False)
        extra = {
            "version": version, "distilled": distilled, "pipeline": index["_class_name"],
            "num_layers": int(tcfg.get("num_layers", 48)), "spatial_factor": rules.spatial_factor,
            "temporal_factor": rules.temporal_factor, "transformer_config": tcfg,
        }  # fmt: skip
        if configs_only:
            layout = "configs-only"
        else:
            layout = "single-file" if single_file.single_transformer_file(path / "transformer") else "diffusers"
        variant = PIPELINE_VARIANTS[index["_class_name"]]
        return ModelInfo(cls.family, path, layout, variant, latent, extra=extra, tasks=("t2v", "i2v"), rules=rules)

    @classmethod
    def has_weights(cls, path: Path) -> bool:
        return folder_has_weights(Path(path), (*DIFFUSERS_PARTS, "text_encoder"))

    @classmethod
    def build_meta(cls, path: Path) -> dict[str, nn.Module]:
        path = Path(path)
        index = cls._index(path)
        modules: dict[str, nn.Module] = {}
        for part in DIFFUSERS_PARTS:
            model_cls, kwargs = cls._config(path, part, index)
            modules[part] = build_on_meta(lambda model_cls=model_cls, kwargs=kwargs: model_cls(**kwargs))
        if (path / "text_encoder" / "config.json").is_file():
            import transformers

            cfg = transformers.AutoConfig.from_pretrained(str(path / "text_encoder"))
            model_cls = getattr(transformers, cls._class_of(path, index, "text_encoder"))
            module = build_on_meta(lambda: model_cls(cfg))
            module.tie_weights()  # Gemma ties its output head to the input embedding: count it once
            modules["text_encoder"] = module
        return modules

    @classmethod
    def weight_shapes(cls, path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
        """The diffusers components' header shapes (their files use the model's own names); the
        text encoder's checkpoint names are checked by transformers when it loads."""
        path = Path(path)
        out = {part: {k: v[0] for k, v in read_header_shapes(find_weight_files(path / part)).items()} for part in DIFFUSERS_PARTS}
        single = single_file.single_transformer_file(path / "transformer")
        if single is not None:  # the original names, as diffusers' converter maps them
            names = single_file.diffusers_names(single)
            out["transformer"] = {names[k]: shape for k, shape in out["transformer"].items()}
        return out

    @classmethod
    def load(cls, path: Path, *, dtype: torch.dtype = torch.float32, components: tuple[str, ...] = COMPONENTS,
             info: ModelInfo | None = None) -> Any:
        """Strict loading of what is asked; the default (`COMPONENTS`) means every component of the
        model (the pipelines refuse to run without the audio VAE, vocoder or connectors)."""
        import transformers
        from diffusers import FlowMatchEulerDiscreteScheduler

        path = Path(path)
        info = info or cls.inspect(path)
        if info.layout == "configs-only":
            raise ModelLoadError(f"{path}: holds configs only (no weights); `model check --meta` reads it, nothing loads it")
        wanted = set(ALL_PARTS) if set(components) == set(COMPONENTS) else set(components)
        unknown = wanted - set(ALL_PARTS)
        if unknown:
            raise ModelLoadError(f"LTX-2 has no component(s) {', '.join(sorted(unknown))}; its components: {', '.join(ALL_PARTS)}")
        index = cls._index(path)
        loaded: dict[str, Any] = {}
        for part in DIFFUSERS_PARTS:
            if part in wanted:
                model_cls, kwargs = cls._config(path, part, index)
                factory = lambda model_cls=model_cls, kwargs=kwargs: model_cls(**kwargs)
                rename = None
                if part == "transformer" and info.layout == "single-file":
                    rename = single_file.check_names(single_file.single_transformer_file(path / part), factory).__getitem__
                loaded[part] = load_strict(factory, path / part, rename=rename, dtype=dtype)
        if "text_encoder" in wanted:
            model_cls = getattr(transformers, cls._class_of(path, index, "text_encoder"))
            loaded["text_encoder"] = load_transformers_strict(path / "text_encoder", model_cls, dtype, model_cls.__name__)
        if "tokenizer" in wanted:
            tok_cls = getattr(transformers, cls._class_of(path, index, "tokenizer"))
            folder = path / "tokenizer"
            if not folder.is_dir():
                raise ModelLoadError(f"missing folder: {folder}")
            try:  # the class model_index names, as the pipeline's from_pretrained loads it
                loaded["tokenizer"] = tok_cls.from_pretrained(str(folder))
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{folder}: cannot load the tokenizer ({exc})") from None
        if "scheduler" in wanted:
            loaded["scheduler"] = FlowMatchEulerDiscreteScheduler.from_config(read_json(path / "scheduler" / "scheduler_config.json"))
        return cls(info, loaded)  # type: ignore[call-arg]

    @classmethod
    def fingerprint_sources(cls, path: Path) -> dict[str, dict[str, Any]]:
        """Latents depend on the transformer and VAE configs and the VAE weights; text conditioning
        (the connectors' outputs) on the text encoder, tokenizer and connectors."""
        video: dict[str, Any] = {
            "transformer_config": ("text", path / "transformer" / "config.json"),
            "vae_config": ("text", path / "vae" / "config.json"),
            "vae_weights": ("files", path / "vae", (".safetensors", ".json")),
        }
        text = {
            "text_encoder": ("files", path / "text_encoder", None), "tokenizer": ("files", path / "tokenizer", None),
            "connectors": ("files", path / "connectors", None),
        }  # fmt: skip
        return {"video": video, "text": text}
