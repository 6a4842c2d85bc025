"""Sample from a checkpoint: ``python sample.py --ckpt_path CKPT --num_samples N --output DIR``."""

from ddpm_signrelu.cli import sample_main

if __name__ == "__main__":
    sample_main()
