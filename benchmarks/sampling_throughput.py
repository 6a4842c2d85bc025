"""Sampling throughput: DDIM-50 and ancestral-1000 with the package's sampler on the SignReLU U-Net + ratio head,
against diffusers' DDIMPipeline / DDPMPipeline and denoising-diffusion-pytorch's GaussianDiffusion on the matched
networks (``benchmarks/matched.py``), side by side in one process.

    pip install -r benchmarks/requirements.txt
    python -m benchmarks.sampling_throughput --setting grey28 --batch 4
    python -m benchmarks.sampling_throughput --setting rgb32 --batch 256 --device cuda --precision bf16 --compile

Weights are the untrained initial ones (the work per step does not depend on them). Each chain is run whole,
``--repeats`` times in turns, and the median is kept. "ours faster" is the row's time over ours. ``--compile``
compiles every network in place (ours through its ``compile`` option) and runs one untimed chain each first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch

from benchmarks.common import anchors_missing, interleaved_medians, machine
from benchmarks.matched import SETTINGS, diffusers_unet, lucidrains_unet, ours


def samplers(args, device) -> dict:
    """name -> a function drawing one batch, for each sampler and network."""
    model = ours(args.setting, compile=args.compile).to(device).eval()
    model.setup("predict")
    shape = SETTINGS[args.setting][1]
    seeds = list(range(args.batch))
    chains = (("DDIM", "ddim", args.ddim_steps), ("ancestral", "ddpm", args.ancestral_steps))
    found = {f"ours {name}-{steps}": (lambda s=sampler, n=steps: model.generate(seeds, s, n))
             for name, sampler, steps in chains}
    if anchors_missing():
        return found
    import denoising_diffusion_pytorch.denoising_diffusion_pytorch as lucidrains
    from denoising_diffusion_pytorch import GaussianDiffusion
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    unet = diffusers_unet(args.setting).to(device).eval()
    net = lucidrains_unet(args.setting)
    if args.compile:
        unet.compile()
        net.compile()
    ddim = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
    ddpm = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    for pipe in (ddim, ddpm):
        pipe.set_progress_bar_config(disable=True)
    found[f"diffusers DDIMPipeline DDIM-{args.ddim_steps}"] = lambda: ddim(
        args.batch, num_inference_steps=args.ddim_steps, output_type="np")
    found[f"diffusers DDPMPipeline ancestral-{args.ancestral_steps}"] = lambda: ddpm(
        args.batch, num_inference_steps=args.ancestral_steps, output_type="np")
    lucidrains.tqdm = functools.partial(lucidrains.tqdm, disable=True)  # its sampling loops' progress bars
    for name, _, steps in chains:
        diffusion = GaussianDiffusion(net, image_size=shape[1], timesteps=1000, sampling_timesteps=steps,
                                      objective="pred_noise", beta_schedule="linear").to(device).eval()
        found[f"denoising-diffusion-pytorch {name}-{steps}"] = lambda d=diffusion: d.sample(args.batch)
    return found


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="grey28")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--ddim_steps", type=int, default=50)
    p.add_argument("--ancestral_steps", type=int, default=1000)
    p.add_argument("--compile", action="store_true", help="torch.compile every network")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if anchors_missing():
        print(f"anchors not installed ({', '.join(anchors_missing())}): pip install -r benchmarks/requirements.txt")
    found = samplers(args, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else \
        contextlib.nullcontext()
    with torch.no_grad(), autocast:
        times = interleaved_medians(found, device, args.repeats, warmup=int(args.compile))
    print(f"{args.setting} {SETTINGS[args.setting][1]}, batch {args.batch}, {args.precision}"
          f"{', torch.compile' if args.compile else ''}; {machine(device)}; "
          f"median of {args.repeats}")
    print(f"{'sampler':44s} {'s/batch':>8s} {'img/s':>8s} {'ours faster':>11s}")
    for name, secs in times.items():
        mine = times[f"ours DDIM-{args.ddim_steps}" if "DDIM" in name else f"ours ancestral-{args.ancestral_steps}"]
        print(f"{name:44s} {secs:8.2f} {args.batch / secs:8.3f} {secs / mine:11.2f}")


if __name__ == "__main__":
    main()
