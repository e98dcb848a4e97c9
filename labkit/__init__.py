"""labkit: a GAN course lab on MNIST."""
