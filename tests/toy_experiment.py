"""A complete experiment on the runner: linear regression by SGD, one fit per seed.

    python -m tests.toy_experiment --seeds=4 --workdir=runs/toy

This module is the whole experiment: its config, its pure per-seed functions, and ``SPEC``.
"""

import dataclasses

import jax
import jax.numpy as jnp

from genrl_jax import config as cfg
from genrl_jax.contract import Train
from genrl_jax.run import cli, runner, spec, sweep

TRUE_W = (1.0, -2.0, 0.5)  # plain numbers: no JAX backend starts at import


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  learning_rate: float = cfg.field(0.05, "SGD step size.", check=cfg.positive, sweepable=True)
  steps_per_chunk: int = cfg.field(50, "SGD steps per chunk.", check=cfg.at_least_one)
  chunks: int = cfg.field(4, "Chunks (each: a progress line and a checkpoint).",
                          check=cfg.at_least_one)


def make_train(config: ToyConfig) -> Train:
  def init(key, data):
    w_key, key = jax.random.split(key)
    return {"w": jax.random.normal(w_key, (3,)), "key": key, "step": jnp.zeros((), jnp.int32)}

  def sgd_step(state, _):
    x = jax.random.normal(jax.random.fold_in(state["key"], state["step"]), (16, 3))
    target = x @ jnp.asarray(TRUE_W)
    loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - target) ** 2))(state["w"])
    return {**state, "w": state["w"] - config.learning_rate * grad,
            "step": state["step"] + 1}, loss

  def chunk(state, data):
    state, losses = jax.lax.scan(sgd_step, state, None, length=config.steps_per_chunk)
    return state, {"loss": losses.mean()}

  def evaluate(state, data):
    return {"distance": jnp.linalg.norm(state["w"] - jnp.asarray(TRUE_W))}

  return Train(init=init, chunk=chunk, evaluate=evaluate)


def build(config: ToyConfig) -> runner.Experiment:
  train = make_train(config)
  return runner.Experiment(
      init=train.init, chunk=train.chunk, evaluate=train.evaluate, num_chunks=config.chunks,
      progress=(("loss", "loss"),), units_per_chunk=config.steps_per_chunk,
      units_label="steps/s", resume_may_change=("chunks",),
      sweepable=sweep.Sweepable(config, lambda h: make_train(dataclasses.replace(config, **h))))


def report(result: runner.RunResult) -> None:
  for key, point in sweep.result_keys(result.results, "distance"):  # a sweep: one per point
    print(f"distance to the true weights{point}: {result.results['metrics'][key]['mean']:.3g}")


SPEC = spec.Spec(name="toy", configs=(ToyConfig,), build=build, report=report, seeds=4,
                 cpu_device_per_core=True)

if __name__ == "__main__":
  cli.main(SPEC)
