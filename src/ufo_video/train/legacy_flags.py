"""Translate the reference's `train_ufo.sh` flags (`--rank=128 --low_vram ...`) into config overrides.

`scripts/train_ufo.sh` and `scripts/train_lora.sh` keep the guide's command working: they call
`python -m ufo_video.train.legacy_flags -0 -- FLAGS...`, which prints one `key=value` override
per flag (NUL-separated with -0), and pass them to `ufo-video train`. Plain `key=value`
arguments pass through unchanged. An unknown flag is an error naming the flag, never ignored;
flags that only configured the reference's own machinery are accepted with a notice.
"""

from __future__ import annotations

import difflib
import json
import re
import sys

from ufo_video.errors import ConfigError

# reference flag -> our dotted config key (value given as --flag=V or --flag V)
VALUE_FLAGS: dict[str, str] = {
    "pretrained_model_name_or_path": "model.pretrained_model_name_or_path",
    "train_data_dir": "data.train_data_dir",
    "train_data_meta": "data.train_data_meta",
    "image_sample_size": "data.image_sample_size",
    "video_sample_size": "data.video_sample_size",
    "token_sample_size": "data.token_sample_size",
    "video_sample_n_frames": "data.video_sample_n_frames",
    "video_sample_stride": "data.video_sample_stride",
    "dataloader_num_workers": "data.dataloader_num_workers",
    "rank": "lora.rank",
    "network_alpha": "lora.network_alpha",
    "output_dir": "train.output_dir",
    "train_mode": "train.train_mode",
    "train_batch_size": "train.train_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "learning_rate": "train.learning_rate",
    "lr_scheduler": "train.lr_scheduler",
    "lr_warmup_steps": "train.lr_warmup_steps",
    "adam_beta1": "train.adam_beta1",
    "adam_beta2": "train.adam_beta2",
    "adam_weight_decay": "train.adam_weight_decay",
    "adam_epsilon": "train.adam_epsilon",
    "max_grad_norm": "train.max_grad_norm",
    "num_train_epochs": "train.num_train_epochs",
    "max_train_steps": "train.max_train_steps",
    "checkpointing_steps": "train.checkpointing_steps",
    "checkpoints_total_limit": "train.checkpoints_total_limit",
    "resume_from_checkpoint": "train.resume_from_checkpoint",
    "seed": "train.seed",
    "mixed_precision": "train.mixed_precision",
    "validation_steps": "train.validation_steps",
    "logging_dir": "train.logging_dir",
    "report_to": "train.report_to",
    "weighting_scheme": "train.weighting_scheme",
    "logit_mean": "train.logit_mean",
    "logit_std": "train.logit_std",
}
# boolean switches: present -> true
SWITCH_FLAGS: dict[str, str] = {
    "low_vram": "train.low_vram",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "use_8bit_adam": "train.use_8bit_adam",
    "save_state": "train.save_state",
    "enable_bucket": "data.enable_bucket",
    "random_hw_adapt": "data.random_hw_adapt",
    "training_with_video_token_length": "data.training_with_video_token_length",
    "random_flip": "data.random_flip",
}
# flags with a fixed meaning here
FIXED: dict[str, str | None] = {
    "uniform_sampling": "train.weighting_scheme=uniform",
    "loss_type": None,  # only "flow" exists for V5.1; checked below
}
# flags that set up the reference's own machinery; nothing to do here
NOTICE_ONLY: dict[str, str] = {
    "config_path": "model settings are read from the model folder's configs",
    "vae_mini_batch": "the VAE encodes one clip at a time",
    "video_repeat": "every metadata entry (videos included) is used once per epoch",
    "tracker_project_name": "TensorBoard logs go to train.output_dir/train.logging_dir",
    "allow_tf32": "TF32 follows PyTorch's defaults",
    "trainable_modules": "the LoRA trains only its own weights",
}
LIST_FLAGS = {"validation_prompts": "train.validation_prompts"}


OVERRIDE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")
# values that must stay strings: YAML would read `no`/`on`/`1e-4`-like paths as other types
STRING_KEYS = {
    "model.pretrained_model_name_or_path", "data.train_data_dir", "data.train_data_meta", "train.output_dir",
    "train.train_mode", "train.lr_scheduler", "train.resume_from_checkpoint", "train.mixed_precision",
    "train.logging_dir", "train.report_to", "train.weighting_scheme",
}  # fmt: skip


def _override(key: str, value: str) -> str:
    return f"{key}={json.dumps(value) if key in STRING_KEYS else value}"


def translate(argv: list[str]) -> tuple[list[str], list[str]]:
    """Flags -> (overrides, notices). Raises `ConfigError` for an unknown or malformed flag."""
    overrides: list[str] = []
    notices: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            if "=" in arg:
                overrides.append(arg)  # already key=value
                continue
            raise ConfigError(f"unexpected argument '{arg}' (flags look like --rank=128; overrides like rank=128)")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")

        def take_value() -> str:
            nonlocal i
            if eq:
                return value
            if i >= len(argv) or argv[i].startswith("--"):
                raise ConfigError(f"flag --{name} needs a value (e.g. --{name}=...)")
            i += 1
            return argv[i - 1]

        if name in SWITCH_FLAGS:
            overrides.append(f"{SWITCH_FLAGS[name]}={value if eq else 'true'}")
        elif name in VALUE_FLAGS:
            overrides.append(_override(VALUE_FLAGS[name], take_value()))
        elif name in LIST_FLAGS:
            items = [value] if eq else []
            # the list ends at the next flag or key=value override
            while i < len(argv) and not argv[i].startswith("--") and not OVERRIDE_RE.match(argv[i]):
                items.append(argv[i])
                i += 1
            overrides.append(f"{LIST_FLAGS[name]}={json.dumps(items)}")
        elif name == "loss_type":
            v = take_value()
            if v != "flow":
                raise ConfigError(f"--loss_type={v}: ufo-video trains with flow matching only (--loss_type=flow)")
        elif name in FIXED:
            overrides.append(FIXED[name])  # type: ignore[arg-type]
        elif name in NOTICE_ONLY:
            if not eq and i < len(argv) and not argv[i].startswith("--"):
                i += 1  # its value
            notices.append(f"--{name} ignored: {NOTICE_ONLY[name]}")
        else:
            known = sorted([*VALUE_FLAGS, *SWITCH_FLAGS, *FIXED, *NOTICE_ONLY, *LIST_FLAGS])
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown flag --{name}.{hint} Any config key can also be given as key=value "
                "(see configs/train_ufo.toml)."
            )
    return overrides, notices


def main(argv: list[str] | None = None) -> int:
    """`python -m ufo_video.train.legacy_flags [-0] -- FLAGS...`: print the overrides."""
    args = list(sys.argv[1:] if argv is None else argv)
    sep = "\n"
    if args and args[0] == "-0":
        sep, args = "\0", args[1:]
    if args and args[0] == "--":
        args = args[1:]
    try:
        overrides, notices = translate(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notices:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write("".join(o + sep for o in overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
