r"""Reference REINFORCE in PyTorch + gymnasium: one CartPole-v1 env stepped in a Python loop.

The usual shape of a PyTorch REINFORCE (pytorch/examples reinforcement_learning/reinforce.py):
every step converts the observation to a tensor, runs the policy, samples from a
``torch.distributions.Categorical`` and keeps its log-probability (and the baseline's value) with
the autograd graph; at the end of a batch of episodes the returns are computed in Python and one
backward pass and one optimizer step are taken.

Same algorithm and networks as ``genrl_jax.rl.reinforce`` with its defaults: policy MLP
4-32-2 (tanh), value MLP 4-32-1 (tanh), reward-to-go returns with gamma 0.99, learned value
baseline (v(s) of the last state bootstraps a truncated episode, never a terminated one), no
advantage normalization, losses averaged over the batch's steps, Adam (policy 1e-2, value 1e-1),
16 episodes per update.

  python benchmarks/peers/torch_reinforce.py --seconds=30        # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def mlp(sizes: list[int], out_scale: float) -> nn.Sequential:
  layers: list[nn.Module] = []
  for i in range(len(sizes) - 1):
    linear = nn.Linear(sizes[i], sizes[i + 1])
    last = i == len(sizes) - 2
    nn.init.orthogonal_(linear.weight, gain=out_scale if last else np.sqrt(2.0))
    nn.init.zeros_(linear.bias)
    layers.append(linear)
    if not last:
      layers.append(nn.Tanh())
  return nn.Sequential(*layers)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=30.0,
                      help="Wall-clock time to train for (checked after each update).")
  parser.add_argument("--max_env_steps", type=int, default=1_000_000)
  parser.add_argument("--episodes_per_update", type=int, default=16)
  parser.add_argument("--gamma", type=float, default=0.99)
  parser.add_argument("--policy_lr", type=float, default=1e-2)
  parser.add_argument("--value_lr", type=float, default=1e-1)
  parser.add_argument("--hidden", type=int, default=32)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  env = gym.make("CartPole-v1")
  obs_dim = env.observation_space.shape[0]
  policy = mlp([obs_dim, args.hidden, env.action_space.n], out_scale=0.01)
  value = mlp([obs_dim, args.hidden, 1], out_scale=1.0)
  policy_opt = torch.optim.Adam(policy.parameters(), lr=args.policy_lr)
  value_opt = torch.optim.Adam(value.parameters(), lr=args.value_lr)

  env_steps = 0
  episode_returns: list[float] = []
  seed = args.seed
  start = time.perf_counter()
  while env_steps < args.max_env_steps and time.perf_counter() - start < args.seconds:
    log_probs, values, returns = [], [], []
    for _ in range(args.episodes_per_update):
      obs, _ = env.reset(seed=seed)
      seed += 1
      rewards, ep_log_probs, ep_values = [], [], []
      while True:
        state = torch.as_tensor(obs, dtype=torch.float32)
        dist = torch.distributions.Categorical(logits=policy(state))
        action = dist.sample()
        ep_log_probs.append(dist.log_prob(action))
        ep_values.append(value(state)[0])
        obs, reward, terminated, truncated, _ = env.step(action.item())
        rewards.append(float(reward))
        if terminated or truncated:
          break
      env_steps += len(rewards)
      episode_returns.append(sum(rewards))
      g = 0.0
      if truncated and not terminated:  # bootstrap through the time limit only
        with torch.no_grad():
          g = float(value(torch.as_tensor(obs, dtype=torch.float32))[0])
      ep_returns = []
      for r in reversed(rewards):
        g = r + args.gamma * g
        ep_returns.append(g)
      returns.extend(reversed(ep_returns))
      log_probs.extend(ep_log_probs)
      values.extend(ep_values)
    returns_t = torch.as_tensor(returns, dtype=torch.float32)
    values_t = torch.stack(values)
    advantages = returns_t - values_t.detach()
    policy_loss = -(torch.stack(log_probs) * advantages).mean()
    value_loss = 0.5 * ((returns_t - values_t) ** 2).mean()
    policy_opt.zero_grad()
    policy_loss.backward()
    policy_opt.step()
    value_opt.zero_grad()
    value_loss.backward()
    value_opt.step()
  seconds = time.perf_counter() - start
  print(json.dumps({
      "env_steps": env_steps, "seconds": round(seconds, 3),
      "env_steps_per_s": round(env_steps / seconds, 1), "episodes": len(episode_returns),
      "return_last100": round(float(np.mean(episode_returns[-100:])), 2),
      "torch": torch.__version__, "gymnasium": gym.__version__, "threads": args.threads}))


if __name__ == "__main__":
  main()
