r"""Reference DQN in PyTorch + gymnasium, in CleanRL's single-file style (cleanrl/dqn.py).

Same algorithm and hyperparameters as ``genrl_jax.rl.dqn.DQNConfig``'s defaults: N = 10
CartPole-v1 envs stepped in a Python loop, epsilon-greedy with epsilon linear from 1.0 to 0.01
over the first 20 % of the 500k-step budget, a 10k-transition uniform replay buffer (numpy),
Q-network 4-120-84-2 (ReLU), Adam 2.5e-4 decayed linearly to 0 over the run's gradient steps,
batch 128, one gradient step per 10 env steps after 10k,
Double DQN target y = r + 0.99 (1 - terminated) Q_target(s', argmax Q(s')), s' the true last
observation on a truncation, MSE loss, gradient clipped to norm 10, hard target copy every
500 env steps.

It trains until ``--seconds`` have passed (or ``--total_env_steps``) and prints one JSON line:
the steps and time of the warm-up phase (before learning starts: acting only) and of the
training phase (acting + updates), so a full budget can be extrapolated linearly.

  python benchmarks/peers/torch_dqn.py --seconds=60
"""

from __future__ import annotations

import argparse
import json
import random
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class QNetwork(nn.Module):
  def __init__(self, obs_dim: int, num_actions: int):
    super().__init__()
    self.network = nn.Sequential(nn.Linear(obs_dim, 120), nn.ReLU(), nn.Linear(120, 84),
                                 nn.ReLU(), nn.Linear(84, num_actions))

  def forward(self, x):
    return self.network(x)


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
  slope = (end_e - start_e) / duration
  return max(slope * t + start_e, end_e)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seconds", type=float, default=60.0)
  p.add_argument("--total_env_steps", type=int, default=500_000)
  p.add_argument("--num_envs", type=int, default=10)
  p.add_argument("--learning_rate", type=float, default=2.5e-4)
  p.add_argument("--buffer_size", type=int, default=10_000)
  p.add_argument("--gamma", type=float, default=0.99)
  p.add_argument("--target_update_period", type=int, default=500)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--eps_start", type=float, default=1.0)
  p.add_argument("--eps_end", type=float, default=0.01)
  p.add_argument("--eps_fraction", type=float, default=0.2)
  p.add_argument("--learning_starts", type=int, default=10_000)
  p.add_argument("--train_frequency", type=int, default=10)
  p.add_argument("--max_grad_norm", type=float, default=10.0)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()

  random.seed(args.seed)
  np.random.seed(args.seed)
  torch.manual_seed(args.seed)
  torch.set_num_threads(args.threads)
  envs = [gym.make("CartPole-v1") for _ in range(args.num_envs)]
  obs = np.stack([e.reset(seed=args.seed + i)[0] for i, e in enumerate(envs)])
  obs_dim, num_actions = obs.shape[1], envs[0].action_space.n

  q_network = QNetwork(obs_dim, num_actions)
  optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
  total_updates = (args.total_env_steps - args.learning_starts) // args.train_frequency + 1
  updates = 0
  target_network = QNetwork(obs_dim, num_actions)
  target_network.load_state_dict(q_network.state_dict())

  size = args.buffer_size
  b_obs = np.zeros((size, obs_dim), np.float32)
  b_next = np.zeros((size, obs_dim), np.float32)
  b_act = np.zeros((size,), np.int64)
  b_rew = np.zeros((size,), np.float32)
  b_term = np.zeros((size,), np.float32)
  pos, full = 0, False

  ep_return = np.zeros(args.num_envs)
  returns: list[float] = []
  global_step = 0
  start = time.perf_counter()
  warm_end = None
  warm_steps = 0
  while global_step < args.total_env_steps and time.perf_counter() - start < args.seconds:
    epsilon = linear_schedule(args.eps_start, args.eps_end,
                              args.eps_fraction * args.total_env_steps, global_step)
    with torch.no_grad():
      greedy = q_network(torch.as_tensor(obs)).argmax(dim=1).numpy()
    actions = np.where(np.random.rand(args.num_envs) < epsilon,
                       np.random.randint(num_actions, size=args.num_envs), greedy)
    next_obs = np.empty_like(obs)
    for i, env in enumerate(envs):
      o, r, terminated, truncated, _ = env.step(int(actions[i]))
      b_obs[pos], b_next[pos], b_act[pos], b_rew[pos], b_term[pos] = (
          obs[i], o, actions[i], r, float(terminated))   # o: the true last obs on truncation
      pos = (pos + 1) % size
      full = full or pos == 0
      ep_return[i] += r
      if terminated or truncated:
        returns.append(ep_return[i])
        ep_return[i] = 0.0
        o, _ = env.reset()
      next_obs[i] = o
    obs = next_obs
    global_step += args.num_envs

    if global_step >= args.learning_starts:
      if warm_end is None:
        warm_end, warm_steps = time.perf_counter(), global_step
      if global_step % args.train_frequency == 0:
        idx = np.random.randint(0, size if full else pos, size=args.batch_size)
        o_t, n_t = torch.as_tensor(b_obs[idx]), torch.as_tensor(b_next[idx])
        with torch.no_grad():
          a_star = q_network(n_t).argmax(dim=1, keepdim=True)
          target_max = target_network(n_t).gather(1, a_star).squeeze(1)
          td_target = torch.as_tensor(b_rew[idx]) + args.gamma * target_max * (
              1 - torch.as_tensor(b_term[idx]))
        old_val = q_network(o_t).gather(1, torch.as_tensor(b_act[idx])[:, None]).squeeze(1)
        loss = F.mse_loss(td_target, old_val)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
        optimizer.param_groups[0]["lr"] = args.learning_rate * (1 - updates / total_updates)
        optimizer.step()
        updates += 1
      if global_step % args.target_update_period == 0:
        target_network.load_state_dict(q_network.state_dict())

  end = time.perf_counter()
  warm_end = warm_end or end
  warm_steps = warm_steps or global_step
  train_steps, train_seconds = global_step - warm_steps, end - warm_end
  print(json.dumps({
      "env_steps": global_step, "seconds": round(end - start, 3),
      "warmup_env_steps": warm_steps, "warmup_seconds": round(warm_end - start, 3),
      "train_env_steps": train_steps, "train_seconds": round(train_seconds, 3),
      "train_env_steps_per_s": round(train_steps / max(train_seconds, 1e-9), 1),
      "episodes": len(returns),
      "return_last100": round(float(np.mean(returns[-100:])), 2) if returns else None,
      "threads": args.threads}))


if __name__ == "__main__":
  main()
