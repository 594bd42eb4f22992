"""Image-to-video with EasyAnimate V5.1 InP and an optional UFO LoRA, as in the UFO guide.

The start image is kept as the first frame (and `validation_image_end`, when set, as the last).
Edit the variables below and run `python predict_i2v.py`, or override any of them on the
command line without editing (values are read like YAML: numbers, lists, None):

    python predict_i2v.py model_name=models/tiny validation_image_start=photo.jpg sample_size=[64,64] video_length=9

No model yet? `ufo-video model make-tiny models/tiny`, then model_name = "models/tiny".
Each run writes save_path/NNNNNNNN.mp4 and NNNNNNNN.json (every setting; reproduce it with
`ufo-video generate --from-sidecar NNNNNNNN.json`). The same is available as
`ufo-video generate --image START [--end-image END]`.
"""

# GPU memory: model_full_load | model_cpu_offload | model_cpu_offload_and_qfloat8 |
# model_cpu_offload_and_fp8_scaled | sequential_cpu_offload | group_offload (on a CPU-only machine everything runs on the CPU)
GPU_memory_mode = "model_cpu_offload_and_qfloat8"
model_name = "models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP"

sample_size = [384, 672]  # [height, width], multiples of 16
video_length = 49  # frames, 4k+1
fps = 8
weight_dtype = "bf16"  # bf16 | fp16 | fp32

# UFO LoRA: the guide recommends a small weight (0.05-0.2); 0 gives the base model exactly
lora_path = None
lora_weight = 0.15

prompt = "The scene comes to life: leaves sway gently in the breeze while the subject turns slowly towards the camera."
negative_prompt = "Blurry, distorted bodies or limbs, watermark, captions, flickering, jittery motion, low quality."
guidance_scale = 6.0
seed = 43
num_inference_steps = 50

validation_image_start = "asset/1.png"  # kept as the first frame
validation_image_end = None  # optional: kept as the last frame
save_path = "samples/easyanimate-videos_i2v"

if __name__ == "__main__":
    import sys

    from ufo_video.infer.run import run_predict_script

    raise SystemExit(run_predict_script(globals(), sys.argv[1:], "predict_i2v.py"))
