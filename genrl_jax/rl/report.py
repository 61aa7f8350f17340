"""Reporting of RL runs from the runner's per-chunk history: learning curves, per-seed summary,
the return figure, and Gym's "solved" thresholds.

The curve metrics (``curve_return``, ``curve_return_last100``, ``curve_env_steps``) are the
[points_per_chunk] arrays ``budget.run_until`` records in each chunk; laid end to end they are
the learning curve at the marks ``budget.curve_marks``. Aggregates over seeds: mean with a 95 %
bootstrap CI and the IQM (Agarwal et al. 2021), from ``genrl_jax.run.stats``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from genrl_jax import config as cfg
from genrl_jax.run import plots
from genrl_jax.run.runner import stack_history

# Gym's reward_threshold for the classic-control tasks ("solved" over 100 episodes).
SOLVED_RETURN = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0}


@dataclasses.dataclass(frozen=True)
class TargetConfig:
  """The return that counts as solved, for every RL experiment (declared here once)."""
  target_return: float | None = cfg.field(
      None, "Return a seed's last-100-episode average must reach to count as solved in "
      "results.json; default: Gym's threshold for the env (CartPole-v1 475, Acrobot-v1 -100, "
      "MountainCar-v0 -110), else none.")


def target_return(config, flag_value: float | None) -> float | None:
  """The return that counts as solved: the flag's value, else Gym's threshold for the env."""
  return flag_value if flag_value is not None else SOLVED_RETURN.get(config.env_id)


def curves(history: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
  """[n_seeds, num_chunks * points_per_chunk]: a per-chunk curve metric laid end to end."""
  stacked = stack_history(history, key)                 # [chunks, seeds, points]
  return np.concatenate(list(stacked), axis=-1)


def steps_to_target(history: list[dict[str, np.ndarray]], target: float) -> list[int | None]:
  """Per seed: the env steps at the first curve point whose last-100 average is >= target."""
  last100 = curves(history, "curve_return_last100")
  steps = curves(history, "curve_env_steps")
  return [int(steps[i, np.argmax(row >= target)]) if np.any(row >= target) else None
          for i, row in enumerate(last100)]


def summarize(history: list[dict[str, np.ndarray]], target: float | None
              ) -> tuple[dict[str, np.ndarray], dict]:
  """Per-seed results of a run from its per-chunk history, for the runner's results schema.

  Returns:
    ({final_return_last100, auc_return, env_steps, updates: [n_seeds]}, extra) where the area
    under the learning curve, normalized, is the mean of the episodic return over the curve's
    points (equally spaced in env steps: the average return in training), and extra holds the
    target return, each seed's env steps to reach it (None: not reached) and how many did.
  """
  metrics = {
      "final_return_last100": stack_history(history, "return_last100")[-1],
      "auc_return": np.nanmean(curves(history, "curve_return"), axis=1),   # NaN: no episode yet
      "env_steps": stack_history(history, "env_steps")[-1],
      "updates": stack_history(history, "updates")[-1],
  }
  extra = {}
  if target is not None:
    first = steps_to_target(history, target)
    extra = {"target_return": target, "steps_to_target": first,
             "seeds_reaching_target": int(sum(f is not None for f in first))}
  return metrics, extra


def hooks(marks: list[int], x_label: str, target: float | None, title: str,
          curve_label: str = "episodes of the update") -> dict:
  """The ``summarize`` and ``figures`` hooks of an RL experiment (``Experiment(**hooks(...))``):
  results from the learning curve, and return.png."""
  def summarize_run(result):
    return summarize(result.history, target)

  def figures(result, out_dir: str):
    return [plot_returns(os.path.join(out_dir, "return.png"), result.history, marks, x_label,
                         title, curve_label)]

  return {"summarize": summarize_run, "figures": figures}


def headline(results: dict) -> str:
  """``last-100 return 499.8 ± 0.2 (IQM 500.0); 8/8 seeds reached 475`` from results.json."""
  from genrl_jax.run import sweep  # noqa: PLC0415
  parts = []
  for key, point in sweep.result_keys(results, "final_return_last100"):  # a sweep: per point
    s = results["metrics"][key]
    parts.append(f"last-100 return{point} {s['mean']:.1f} ± {s['ci95_half_width']:.1f} "
                 f"(IQM {s['iqm']:.1f})")
  line = "; ".join(parts)
  extra = results.get("extra", {})
  if "target_return" in extra:
    runs = len(extra["sweep"]["cells"]) if "sweep" in extra else len(results["seeds"])
    line += (f"; {extra['seeds_reaching_target']}/{runs} {'cells' if 'sweep' in extra else 'seeds'}"
             f" reached {extra['target_return']:g}")
  return line


def plot_returns(path: str, history: list[dict[str, np.ndarray]], marks: list[int],
                 x_label: str, title: str, curve_label: str = "episodes of the update") -> str:
  """Episodic return vs the budget's counter: mean (left) and IQM (right) over seeds with 95 %
  CI bands; ``marks`` are the counter values of the curve points (``config.curve_marks()``)."""
  import matplotlib.pyplot as plt  # noqa: PLC0415 (after run.plots selected Agg)
  ret = curves(history, "curve_return")
  last100 = curves(history, "curve_return_last100")
  x = np.asarray(marks[:ret.shape[1]], np.float64)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, statistic in zip(axes, ("mean", "iqm")):
    plots.band(ax, x, ret, label=curve_label, statistic=statistic)
    plots.band(ax, x, last100, label="last 100 episodes", statistic=statistic)
    ax.set_title(f"{'IQM' if statistic == 'iqm' else 'mean'} over {ret.shape[0]} seeds, "
                 "95% bootstrap CI")
    ax.set_xlabel(x_label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("episodic return")
  axes[0].legend(loc="lower right")
  fig.suptitle(title)
  return plots.save(fig, path)
