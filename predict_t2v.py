"""Text-to-video with EasyAnimate V5.1 and an optional UFO LoRA, as in the UFO guide.

Edit the variables below and run `python predict_t2v.py`, or override any of them on the
command line without editing (values are read like YAML: numbers, lists, None):

    python predict_t2v.py model_name=models/tiny sample_size=[64,64] video_length=9 num_inference_steps=4
    python predict_t2v.py lora_path=output_dir/checkpoint-3000.safetensors lora_weight=0.1 prompt="a cat"

No model yet? `ufo-video model make-tiny models/tiny`, then model_name = "models/tiny".
Each run writes save_path/NNNNNNNN.mp4 and NNNNNNNN.json (every setting; reproduce it with
`ufo-video generate --from-sidecar NNNNNNNN.json`). The same is available as `ufo-video generate`.
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

prompt = "A red fox trots along a snowy forest path at dawn, its breath visible in the cold air; soft golden light filters through the pines, and the camera follows it slowly from the side."
negative_prompt = "Blurry, distorted bodies or limbs, watermark, captions, flickering, jittery motion, low quality."
guidance_scale = 6.0
seed = 43
num_inference_steps = 50

validation_image_start = None  # set an image path to keep it as the first frame (image-to-video)
save_path = "samples/easyanimate-videos"

if __name__ == "__main__":
    import sys

    from ufo_video.infer.run import run_predict_script

    raise SystemExit(run_predict_script(globals(), sys.argv[1:], "predict_t2v.py"))
