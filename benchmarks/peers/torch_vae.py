"""PyTorch reference of the same VAE (the PyTorch examples' MNIST VAE, made comparable).

Not a dependency of genrl_jax: benchmarks import it to compare quality and speed. Same model as
genrl_jax (784-400-20 MLP, ReLU, Gaussian encoder with mean and log-variance heads, Bernoulli
decoder from logits), same initialisation scheme as flax's Dense (truncated-normal LeCun kernels,
zero biases), same objective (mean over the batch of BCE-with-logits summed over pixels plus the
closed-form KL, one reparameterized sample), Adam 1e-3, batch 128, a fresh permutation per epoch
with the last partial batch dropped, grayscale targets in [0, 1]. Data is held in memory as one
tensor (no DataLoader), so the timing measures the model, not a data pipeline.

  python -m benchmarks.peers.torch_vae --data_dir=../shared/data/fashion_mnist --epochs=1
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def lecun_truncated_normal_(weight: torch.Tensor, fan_in: int) -> None:
  """flax's default kernel init: variance_scaling(1, fan_in, truncated_normal) — a normal with
  std sqrt(1/fan_in)/0.8796 (the truncation's correction) truncated at two std."""
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


class VAE(nn.Module):
  """x [B, P] -> (logits [B, P], mean [B, D], log_var [B, D])."""

  def __init__(self, pixels: int = 784, hidden: int = 400, latent: int = 20):
    super().__init__()
    self.fc1 = nn.Linear(pixels, hidden)
    self.fc21 = nn.Linear(hidden, latent)
    self.fc22 = nn.Linear(hidden, latent)
    self.fc3 = nn.Linear(latent, hidden)
    self.fc4 = nn.Linear(hidden, pixels)
    for layer in (self.fc1, self.fc21, self.fc22, self.fc3, self.fc4):
      lecun_truncated_normal_(layer.weight, layer.in_features)
      nn.init.zeros_(layer.bias)

  def encode(self, x):
    h = F.relu(self.fc1(x))
    return self.fc21(h), self.fc22(h)

  def decode(self, z):
    return self.fc4(F.relu(self.fc3(z)))

  def forward(self, x):
    mean, log_var = self.encode(x)
    z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
    return self.decode(z), mean, log_var


def neg_elbo_terms(logits, x, mean, log_var):
  """Per-example (-ELBO, KL): BCE with logits summed over pixels + KL(q || N(0, I))."""
  recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
  kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp(), dim=1)
  return recon + kl, kl


def train_epoch(model, optimizer, train_x: torch.Tensor, batch_size: int,
                generator: torch.Generator) -> float:
  """One epoch over a fresh permutation (last partial batch dropped); returns the mean -ELBO."""
  model.train()
  n_batches = train_x.shape[0] // batch_size
  order = torch.randperm(train_x.shape[0], generator=generator)[:n_batches * batch_size]
  total = 0.0
  for idx in order.view(n_batches, batch_size):
    x = train_x[idx]
    logits, mean, log_var = model(x)
    loss = neg_elbo_terms(logits, x, mean, log_var)[0].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    total += loss.item()
  return total / n_batches


@torch.no_grad()
def test_neg_elbo(model, test_x: torch.Tensor, batch_size: int = 1000) -> float:
  """Mean single-sample -ELBO over the test set."""
  model.eval()
  total = 0.0
  for start in range(0, test_x.shape[0], batch_size):
    x = test_x[start:start + batch_size]
    logits, mean, log_var = model(x)
    total += neg_elbo_terms(logits, x, mean, log_var)[0].sum().item()
  return total / test_x.shape[0]


def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
  """uint8 [N, ...] -> float32 [N, P] grayscale intensities in [0, 1]."""
  return torch.from_numpy(images_u8.reshape(images_u8.shape[0], -1).astype(np.float32) / 255.0)


def train(train_x: torch.Tensor, test_x: torch.Tensor, seed: int, epochs: int,
          batch_size: int = 128, learning_rate: float = 1e-3, hidden: int = 400,
          latent: int = 20) -> dict:
  """One seed: returns per-epoch train/test -ELBO and seconds (training only, eval excluded)."""
  torch.manual_seed(seed)
  generator = torch.Generator().manual_seed(seed)
  model = VAE(train_x.shape[1], hidden, latent)
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
  history = {"train_neg_elbo": [], "test_neg_elbo": [], "train_seconds": []}
  for _ in range(epochs):
    t0 = time.perf_counter()
    history["train_neg_elbo"].append(train_epoch(model, optimizer, train_x, batch_size, generator))
    history["train_seconds"].append(time.perf_counter() - t0)
    history["test_neg_elbo"].append(test_neg_elbo(model, test_x))
  history["examples_per_epoch"] = (train_x.shape[0] // batch_size) * batch_size
  return history


def main():
  from genrl_jax.data import images  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  ds = images.load(args.dataset, args.data_dir)
  train_x, test_x = to_tensor(ds.train_images), to_tensor(ds.test_images)
  runs = [train(train_x, test_x, seed, args.epochs) for seed in range(args.seeds)]
  print(json.dumps(runs))


if __name__ == "__main__":
  main()
