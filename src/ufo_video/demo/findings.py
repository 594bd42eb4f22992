"""The demo's notes around the trend verdict (`ufo_video.eval.trend_verdict`): a quick run's
caveat and how much the base model moves."""

from __future__ import annotations

from ufo_video.eval.metrics import dynamic_threshold_px


def quick_caveat(result: dict, train_steps: int, weights: int) -> dict:
    """A quick run trains a few steps: its videos differ by noise, not by what UFO learned, so
    its trend is shown as measured but not judged (`judged` False, the statement says why)."""
    result["judged"] = False
    result["statement"] = (f"Quick run: {train_steps} training steps and {weights} weights are too few to show "
                           "UFO's trend, so this is not a verdict on UFO (run the demo without --quick for one). "
                           f"Measured: {result['statement']}")  # fmt: skip
    return result


def motion_note(records: list[dict], size: int, fps: int) -> str:
    """How much the videos without the LoRA move, so a tiny dynamics effect is read in context."""
    base = [r["metrics"] for r in records if r["weight"] == 0.0]
    if not base:
        return "No video at alpha 0: the base model's own motion is not measured."
    flow = sum(m["flow_px"] for m in base) / len(base)
    dynamic = sum(bool(m["is_dynamic"]) for m in base)
    threshold = dynamic_threshold_px(size, size, fps)
    text = (f"Without the LoRA (alpha 0) the videos move {flow:.3g} px per frame on average; "
            f"{dynamic} of {len(base)} count as dynamic (VBench-style threshold {threshold:.3g} px for the top 5% of "
            "the flow).")  # fmt: skip
    if dynamic == 0:
        text += (" The base model barely moves, so the dynamics trend is measured on very small motions; a "
                 "trained, dynamic base model is needed to see UFO trade motion for consistency at scale.")
    return text
