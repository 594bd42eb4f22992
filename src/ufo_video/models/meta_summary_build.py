"""Generates `assets/meta-summaries.json`, which `models.meta_summary` reads: `model check --meta`'s
report and the bundled name configs' transformer module names for every shipped configs folder,
computed from the real classes (imports diffusers; run by hand and by tests/test_meta_summary.py).
Kept apart from the reader so that `models.check` (which the generator runs) and the reader do
not import each other. Run: python -m ufo_video.models.meta_summary_build
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ufo_video.models.meta_summary import ASSETS, STORE, fingerprint


def shipped_folders() -> list[Path]:
    """Every configs-only model folder under assets/ (a folder with a transformer config)."""
    found = {p.parent.parent for p in ASSETS.rglob("transformer/config.json")}
    return sorted(f for f in found if fingerprint(f) is not None)


def build_entry(folder: Path) -> dict[str, Any]:
    """The entry for one folder, computed from the real classes (slow: imports diffusers)."""
    from ufo_video.models.check import check_model
    from ufo_video.models.registry import ADAPTERS, adapter_for

    report = check_model(folder, meta=True, use_store=False).to_dict()
    del report["path"]
    entry: dict[str, Any] = {"fingerprint": fingerprint(folder), "report": report}
    names_folders = {c.names_model_path().resolve() for c in ADAPTERS.values() if c.names_model_path() is not None}
    if folder.resolve() in names_folders:
        transformer = adapter_for(folder).build_meta(folder)["transformer"]
        entry["module_names"] = {"transformer": [n for n, _ in transformer.named_modules() if n]}
    return entry


def generate() -> dict[str, Any]:
    folders = {f.relative_to(ASSETS).as_posix(): build_entry(f) for f in shipped_folders()}
    return {"generated_by": "python -m ufo_video.models.meta_summary_build", "folders": folders}


def main() -> None:
    from ufo_video.atomic import write_text_atomic

    data = generate()
    write_text_atomic(STORE, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {STORE} ({len(data['folders'])} folders)")


if __name__ == "__main__":
    main()
