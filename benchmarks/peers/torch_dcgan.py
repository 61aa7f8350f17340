"""PyTorch reference of the same DCGAN (genrl_jax.models.dcgan), for the throughput benchmark.

Not a dependency of genrl_jax. Same architecture for width w and noise size Z:

  G: Linear(Z, 7*7*4w, no bias) -> BatchNorm1d -> ReLU -> [Conv2d(4w, 4w, 3, 1, 1, no bias)
     -> BatchNorm2d -> ReLU] x extra_convs -> ConvTranspose2d(4w, 2w, 4, 2, 1, no bias)
     -> BatchNorm2d -> ReLU -> ConvTranspose2d(2w, C, 4, 2, 1) -> tanh
  D: Conv2d(C, w, 4, 2) -> LeakyReLU(0.2) -> [Conv2d(., 2^i w, 4, 2, no bias) -> BatchNorm2d
     -> LeakyReLU(0.2)] for i = 1 .. L-1 -> Linear(side*side*2^(L-1) w, 1), sides 28 -> 14 -> 7
     -> 4 -> 2 with XLA's "SAME" padding     (batch_norm=False: convs with bias, no BatchNorm2d)

N(0, 0.02) weights; Adam(2e-4, betas=(0.5, 0.999)) for each network; one iteration as in the
PyTorch DCGAN example and genrl_jax.generative.gan: a real batch drawn with replacement, a D step
on (x, G(z).detach()) with the BCE, a G step on the non-saturating loss with the same z.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class Generator(nn.Module):
  def __init__(self, width: int, latent: int, channels: int = 1, extra_convs: int = 0):
    super().__init__()
    self.width = width
    self.project = nn.Linear(latent, 7 * 7 * 4 * width, bias=False)
    self.bn0 = nn.BatchNorm1d(7 * 7 * 4 * width, momentum=0.1)
    self.convs = nn.Sequential(*[
        layer for _ in range(extra_convs)
        for layer in (nn.Conv2d(4 * width, 4 * width, 3, 1, 1, bias=False),
                      nn.BatchNorm2d(4 * width, momentum=0.1), nn.ReLU())])
    self.deconv0 = nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(2 * width, momentum=0.1)
    self.deconv1 = nn.ConvTranspose2d(2 * width, channels, 4, 2, 1)

  def forward(self, z):
    h = self.convs(F.relu(self.bn0(self.project(z))).view(-1, 4 * self.width, 7, 7))
    h = F.relu(self.bn1(self.deconv0(h)))
    return torch.tanh(self.deconv1(h))


class Discriminator(nn.Module):
  def __init__(self, width: int, channels: int = 1, batch_norm: bool = True, conv_layers: int = 4):
    super().__init__()
    self.convs = nn.ModuleList([nn.Conv2d(channels, width, 4, 2, 0)])
    self.norms = nn.ModuleList([nn.Identity()])
    side = 14
    for i in range(1, conv_layers):
      self.convs.append(nn.Conv2d(2 ** (i - 1) * width, 2 ** i * width, 4, 2, 0,
                                  bias=not batch_norm))
      self.norms.append(nn.BatchNorm2d(2 ** i * width) if batch_norm else nn.Identity())
      side = -(-side // 2)
    self.logit = nn.Linear(side * side * 2 ** (conv_layers - 1) * width, 1)

  def forward(self, x):
    h = x
    for conv, norm in zip(self.convs, self.norms):
      h = F.leaky_relu(norm(conv(_same_padding(h))), 0.2)
    return self.logit(h.flatten(1))[:, 0]


def _same_padding(x):
  """XLA's "SAME" padding of a 4x4 stride-2 convolution: (out - 1) * 2 + 4 - in pixels in all,
  the odd one after (an odd side, 7 -> 4, pads 1 before and 2 after; PyTorch's padding=1 would
  give 3)."""
  side = x.shape[-1]
  total = (-(-side // 2) - 1) * 2 + 4 - side
  return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


def _init(module):
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)


class DCGAN:
  """One seed's networks, optimizers and data; ``iterations(n)`` trains n iterations."""

  def __init__(self, train_u8: np.ndarray, width: int, latent: int, batch: int, seed: int,
               batch_norm: bool = True, conv_layers: int = 4, generator_convs: int = 0):
    torch.manual_seed(seed)
    self.data = torch.from_numpy(train_u8.reshape(-1, 1, 28, 28).astype(np.float32) / 127.5 - 1)
    self.g = Generator(width, latent, extra_convs=generator_convs)
    self.d = Discriminator(width, batch_norm=batch_norm, conv_layers=conv_layers)
    _init(self.g)
    _init(self.d)
    self.opt_g = torch.optim.Adam(self.g.parameters(), 2e-4, betas=(0.5, 0.999))
    self.opt_d = torch.optim.Adam(self.d.parameters(), 2e-4, betas=(0.5, 0.999))
    self.latent, self.batch = latent, batch

  def iterations(self, n: int) -> float:
    """n training iterations; returns the last D loss."""
    for _ in range(n):
      real = self.data[torch.randint(0, len(self.data), (self.batch,))]
      z = torch.randn(self.batch, self.latent)
      fake = self.g(z)
      d_loss = (F.softplus(-self.d(real)) + F.softplus(self.d(fake.detach()))).mean()
      self.opt_d.zero_grad(set_to_none=True)
      d_loss.backward()
      self.opt_d.step()
      g_loss = F.softplus(-self.d(fake)).mean()
      self.opt_g.zero_grad(set_to_none=True)
      g_loss.backward()
      self.opt_g.step()
    return float(d_loss.detach())
