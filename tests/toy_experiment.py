"""A complete experiment on the runner: linear regression by SGD, one fit per seed."""

import dataclasses

import jax
import jax.numpy as jnp

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.run import cli
from genrl_jax.run import config_flags


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  learning_rate: float = cfg.field(0.05, "SGD step size.", check=cfg.positive)
  steps_per_chunk: int = cfg.field(50, "SGD steps per chunk.", check=cfg.at_least_one)
  chunks: int = cfg.field(4, "Chunks (each: a progress line and a checkpoint).",
                          check=cfg.at_least_one)


cli.define_run_flags(workdir="runs/toy", seeds=4)
config_flags.define_flags(ToyConfig)
TRUE_W = jnp.array([1.0, -2.0, 0.5])


def make_train(config: ToyConfig) -> runner.Train:
  def init(key, data):
    w_key, key = jax.random.split(key)
    return {"w": jax.random.normal(w_key, (3,)), "key": key, "step": jnp.zeros((), jnp.int32)}

  def sgd_step(state, _):
    x = jax.random.normal(jax.random.fold_in(state["key"], state["step"]), (16, 3))
    loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - x @ TRUE_W) ** 2))(state["w"])
    return {**state, "w": state["w"] - config.learning_rate * grad,
            "step": state["step"] + 1}, loss

  def chunk(state, data):
    state, losses = jax.lax.scan(sgd_step, state, None, length=config.steps_per_chunk)
    return state, {"loss": losses.mean()}

  def evaluate(state, data):
    return {"distance": jnp.linalg.norm(state["w"] - TRUE_W)}

  return runner.Train(init=init, chunk=chunk, evaluate=evaluate)


def main(argv):
  run_flags = cli.run_flags("toy")
  config = config_flags.from_flags(ToyConfig)
  train = make_train(config)
  experiment = runner.Experiment(
      name="toy", init=train.init, chunk=train.chunk, evaluate=train.evaluate,
      num_chunks=config.chunks, chunk_label="chunk", progress=(("loss", "loss"),),
      units_per_chunk=config.steps_per_chunk, units_label="steps/s", resume_may_change=("chunks",))
  result = cli.run(experiment, run_flags)
  print(f"distance to the true weights: {result.results['metrics']['distance']['mean']:.3g}")


if __name__ == "__main__":
  runner.cli_main(main, host_device_per_core=True)
