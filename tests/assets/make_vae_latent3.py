"""Make tests/assets/vae_latent3_decoder.pt: the decoder of labkit's VAE at latent 3, trained as the cpu profile
trains it (5000 steps, seed 2022; 7 min on a loaded 2-core CPU). tests/test_analysis.py counts its samples.

    python tests/assets/make_vae_latent3.py RUN_FOLDER
"""

import sys
from pathlib import Path

import torch

from labkit.runs.config import VAEConfig
from labkit.vae import train_vae

if __name__ == "__main__":
    config = VAEConfig(latent_dim=3, num_training_steps=5000, seed=2022, saving_steps=5000, logging_steps=500)
    run = train_vae(config, out_dir=sys.argv[1])
    torch.save(run.vae.decoder.state_dict(), Path(__file__).parent / "vae_latent3_decoder.pt")
