"""Experiments built on the lesson: many runs at once.

    together   several seeds of one configuration trained as one stacked model (faster; the same runs)
    sweep      a latent x hidden x seeds grid, resumable, with FID tables
"""
