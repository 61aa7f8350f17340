"""One experiment, one place: the ``SPEC`` an experiment module exposes.

An experiment module (``genrl_jax/generative/vae_run.py``, or a single file of your own) defines
its config dataclasses (``genrl_jax.config``) and

    SPEC = spec.Spec(name="vae", configs=(vae.VAEConfig, images.DataConfig), build=build,
                     report=print_results, chunk_label="epoch")

where ``build(*configs) -> runner.Experiment`` takes the validated configs in that order. The
command line (``cli.main``), replay (``find`` by the module recorded in run_info.json), sweeps,
benchmarks and tests all build the run through ``Spec.experiment``, so there is one path from
flags to the run and nothing to register.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Mapping

from genrl_jax import config as cfg
from genrl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Spec:
  """An experiment as every caller builds it.

  Attributes:
    name: the experiment's name: run_info.json's "experiment", the default --workdir
      ``runs/<name>``.
    configs: the frozen config dataclasses whose flag fields are the experiment's flags.
    build: (*configs) -> ``runner.Experiment``, given the validated configs in that order.
    report: (``runner.RunResult``) -> None: prints the final numbers after a run; None: only the
      path of results.json.
    seeds: the default --seeds.
    chunk_label: what a chunk is called in progress lines and flag help ("epoch", "chunk").
    cpu_device_per_core: on a CPU host, expose one XLA device per core before JAX starts, so
      the seeds spread over the cores (``devices.host_device_per_core``).
  """
  name: str
  configs: tuple[type, ...]
  build: Callable[..., Any]
  report: Callable[[Any], None] | None = None
  seeds: int = 1
  chunk_label: str = "chunk"
  cpu_device_per_core: bool = False

  @property
  def module(self) -> str:
    """The module that defines ``build``: where replay finds this spec again."""
    return _module_name(self.build)

  def experiment(self, *configs, name: str | None = None):
    """The run these validated configs describe (``name``: a variant's, e.g. ``reinforce[total]``)."""
    if len(configs) != len(self.configs) or not all(
        isinstance(c, t) for c, t in zip(configs, self.configs)):
      raise TypeError(f"{self.name}: build takes {[t.__name__ for t in self.configs]}, got "
                      f"{[type(c).__name__ for c in configs]}")
    exp = self.build(*configs)
    return dataclasses.replace(exp, name=name or self.name, chunk_label=self.chunk_label,
                               spec=self.module)

  def configs_from(self, values: Mapping[str, Any], **overrides) -> tuple:
    """The validated configs from flag values by flag name (run_info.json's "config"); a flag
    missing there takes its default. ``overrides`` (by field name) apply to every config that
    has the field."""
    out = []
    for cls in self.configs:
      names = {f.name for f in dataclasses.fields(cls)}
      out.append(cfg.from_mapping(cls, values, **{k: v for k, v in overrides.items()
                                                  if k in names}))
    return tuple(out)

  def from_flag_values(self, values: Mapping[str, Any], name: str | None = None, **overrides):
    """``experiment(*configs_from(values))``: a run from saved or hand-written flag values."""
    return self.experiment(*self.configs_from(values, **overrides), name=name)


def _module_name(fn) -> str:
  module = getattr(fn, "__module__", None) or "__main__"
  if module == "__main__":  # ``python -m toy``: the module's importable name
    import sys  # noqa: PLC0415
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = main_spec.name if main_spec is not None else module
  return module


def load(module: str) -> Spec:
  """The ``SPEC`` of an importable module, or one clear line."""
  try:
    found = importlib.import_module(module)
  except ImportError as e:
    raise UserError(f"cannot import {module!r}, the module that built this run ({e}); run from "
                    "the directory (or PYTHONPATH) the run was made from") from None
  spec = getattr(found, "SPEC", None)
  if not isinstance(spec, Spec):
    raise UserError(f"{module!r} exposes no SPEC (a genrl_jax.run.spec.Spec)")
  return spec


def library_specs() -> dict[str, str]:
  """{experiment name: module} of every ``*_run`` module in the package that exposes a SPEC:
  found by convention, for runs whose run_info.json predates the recorded module."""
  import genrl_jax  # noqa: PLC0415
  out = {}
  for info in pkgutil.walk_packages(genrl_jax.__path__, "genrl_jax."):
    if info.name.endswith("_run"):
      spec = getattr(importlib.import_module(info.name), "SPEC", None)
      if isinstance(spec, Spec):
        out[spec.name] = info.name
  return out


def base_name(name: str) -> str:
  """A variant's experiment: ``reinforce[total]`` -> ``reinforce``."""
  return name.split("[", 1)[0]


def for_run(info: Mapping[str, Any]) -> Spec:
  """The spec that rebuilds the run a run_info.json describes: the module it recorded, else
  (a run made before modules were recorded) the package's spec of the same name."""
  if info.get("spec"):
    return load(info["spec"])
  name = base_name(str(info.get("experiment")))
  known = library_specs()
  if name not in known:
    raise UserError(f"no replay for experiment {name!r}: known are {', '.join(sorted(known))}")
  return load(known[name])
