"""absl flags from config dataclasses: one flag per field (``genrl_jax.config``), its help text,
type and choices, and the validated dataclass back from the parsed flags."""

from __future__ import annotations

import typing

from absl import flags

from genrl_jax import config


def define_flags(cls, flag_values=flags.FLAGS, defaults: dict | None = None,
                 module_name: str | None = None) -> None:
  """Defines one absl flag per flag field of dataclass ``cls`` (its help, type and choices).

  ``defaults`` overrides field defaults for this entry point's flags (e.g. another env).
  """
  hints = typing.get_type_hints(cls)
  defaults = defaults or {}
  for f in config.flag_fields(cls):
    name = config.flag_name(f)
    default = defaults.get(f.name, f.default)
    kind, _ = config.value_kind(hints[f.name])
    help_text = f.metadata["help"]
    choices = f.metadata["choices"]
    kw = {"flag_values": flag_values, "module_name": module_name}
    if choices is not None:
      flags.DEFINE_enum(name, default, list(choices), help_text, **kw)
    elif kind == "bool":
      flags.DEFINE_bool(name, default, help_text, **kw)
    elif kind == "int":
      flags.DEFINE_integer(name, default, help_text, **kw)
    elif kind == "float":
      flags.DEFINE_float(name, default, help_text, **kw)
    elif kind in ("ints", "strs"):
      flags.DEFINE_list(name, [str(v) for v in default], help_text, **kw)
    else:
      flags.DEFINE_string(name, default, help_text, **kw)


def from_flags(cls, flag_values=flags.FLAGS, **overrides):
  """The validated ``cls`` that the parsed flags describe (``overrides`` win)."""
  hints = typing.get_type_hints(cls)
  values = {}
  for f in config.flag_fields(cls):
    kind, _ = config.value_kind(hints[f.name])
    value = flag_values[config.flag_name(f)].value
    values[f.name] = config.parse_value(cls.__name__, f, kind, value)
  values.update(overrides)
  made = cls(**values)
  config.validate(made)
  return made
