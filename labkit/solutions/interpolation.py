"""Exercise 4 (notebook 05), labkit's answer: the latent codes of a walk from z1 to z2."""

import torch


def slerp(z1, z2, t):
    """Spherical interpolation: walks along the great circle, keeping the norm
    typical of Gaussian codes (a straight line passes nearer the origin)."""
    z1n, z2n = z1 / z1.norm(dim=-1, keepdim=True), z2 / z2.norm(dim=-1, keepdim=True)
    omega = torch.arccos((z1n * z2n).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    linear = (1 - t) * z1 + t * z2
    spherical = (torch.sin((1 - t) * omega) * z1 + torch.sin(t * omega) * z2) / so.clamp_min(1e-8)
    return torch.where(so.abs() < 1e-6, linear, spherical)


def interpolation_latents(z1, z2, start=0.0, stop=1.0, steps=20, method="linear"):
    """Codes z_i = (1 - l_i) z1 + l_i z2 for `steps` values l_i from start to stop.

    z1, z2: (P, latent) pairs. Returns (P, steps, latent). [0, 1] interpolates,
    [-1, 2] extrapolates beyond both ends, as in the course.
    """
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    t = torch.linspace(start, stop, steps, device=z1.device).view(1, steps, 1)
    a, b = z1[:, None, :], z2[:, None, :]
    return (1 - t) * a + t * b if method == "linear" else slerp(a, b, t)
