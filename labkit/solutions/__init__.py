"""The answer key: labkit's reference answers to the lab's six exercises, in one place.

Students: these are the answers. The notebooks ask you to write each piece
yourself, check it against these (labkit/checks.py), and then train with
your own code; read a file here only once your own version passes, to
compare.

    dcgan.py          exercise 1 (notebook 01): the course's DCGAN generator and discriminator
    losses.py         exercise 2 (notebook 01): the discriminator's and the generator's loss
    rebalancing.py    exercise 3 (notebook 04): when D may take its step
    interpolation.py  exercise 4 (notebook 05): linear and spherical interpolation of latent codes
    mlp.py            exercise 5 (notebook 07): the MLP GAN's generator and discriminator
    vae.py            exercise 6 (notebook 09): the VAE's reparameterisation, KL term and loss

labkit trains its own reference runs with these (labkit/gan.py, labkit/vae.py).
"""

from .dcgan import DCGANDiscriminator, DCGANGenerator
from .interpolation import interpolation_latents, slerp
from .losses import bce_with_logits, discriminator_loss, generator_loss
from .mlp import MLPDiscriminator, MLPGenerator
from .rebalancing import update_discriminator
from .vae import kl_divergence, reconstruction_loss, reparameterize, vae_loss

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "discriminator_loss", "generator_loss", "bce_with_logits",
           "update_discriminator", "interpolation_latents", "slerp", "MLPGenerator", "MLPDiscriminator",
           "reparameterize", "kl_divergence", "reconstruction_loss", "vae_loss"]
