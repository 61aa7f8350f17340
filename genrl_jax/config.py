"""Each config field declared once: a frozen dataclass field with its help text and its check.

    @dataclasses.dataclass(frozen=True)
    class MyConfig:
      learning_rate: float = config.field(1e-3, "Adam step size.", check=config.positive)
      hidden: tuple[int, ...] = config.field((400,), "Hidden widths, comma-separated.")

    config_flags.define_flags(MyConfig)    # --learning_rate, --hidden, with that help
    cfg = config_flags.from_flags(MyConfig)  # the validated dataclass (UserError on bad values)

(``genrl_jax.run.config_flags`` turns the fields into absl flags; this module needs no absl, so
an algorithm that declares its config imports nothing of the runner.)

The flag's type follows the annotation: int, float, bool, str (an enum with ``choices``),
``tuple[int, ...]`` / ``tuple[str, ...]`` (comma-separated lists) and ``float | None``. A field
may take another flag name (``flag="env"``) or none (``flag=None``: set by code, not by flags).
Checks run in ``validate`` (also called by ``from_flags``) and raise ``UserError`` naming the
flag, its value and what it must be: the one clear line bad input gets.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable

from genrl_jax.errors import UserError

_NO_FLAG = "__no_flag__"

# A check is (predicate, "what the value must be"); the message reads "--name must be ...".
Check = tuple[Callable[[Any], bool], str]
positive: Check = (lambda v: v is not None and math.isfinite(v) and v > 0, "must be a positive number")
non_negative: Check = (lambda v: math.isfinite(v) and v >= 0, "must be >= 0")
at_least_one: Check = (lambda v: v >= 1, "must be >= 1")
unit_interval: Check = (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
open_unit_interval: Check = (lambda v: 0.0 < v < 1.0, "must be in (0, 1)")
positive_sizes: Check = (lambda v: all(h >= 1 for h in v), "must be positive integers")
nonempty_positive_sizes: Check = (lambda v: len(v) > 0 and all(h >= 1 for h in v),
                                  "needs at least one width, all >= 1")


def at_least(low: float) -> Check:
  return (lambda v: v >= low, f"must be >= {low}")


def field(default, help: str, *, choices=None, check: Check | None = None,  # noqa: A002
          flag: str | None = _NO_FLAG, sweepable: bool = False):
  """A dataclass field with its flag's help text, allowed values and check."""
  return dataclasses.field(default=default, metadata={
      "help": help, "choices": tuple(choices) if choices is not None else None, "check": check,
      "flag": flag, "sweepable": sweepable})


def flag_name(f: dataclasses.Field) -> str | None:
  name = f.metadata.get("flag", _NO_FLAG)
  return f.name if name == _NO_FLAG else name


def flag_fields(cls) -> list[dataclasses.Field]:
  """The fields of ``cls`` that are command-line flags."""
  return [f for f in dataclasses.fields(cls) if "help" in f.metadata and flag_name(f)]


def value_kind(annotation) -> tuple[str, bool]:
  """(int|float|bool|str|ints|strs, optional) of a field's annotation."""
  optional = False
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = len(args) < len(typing.get_args(annotation))
    annotation = args[0]
    origin = typing.get_origin(annotation)
  if origin is tuple:
    inner = typing.get_args(annotation)[0]
    return ("ints" if inner is int else "strs"), optional
  return annotation.__name__, optional


def parse_value(cls_name: str, f: dataclasses.Field, kind: str, value):
  if kind == "ints":
    try:
      return tuple(int(v) for v in value if str(v).strip())
    except ValueError:
      raise UserError(f"--{flag_name(f)} must be comma-separated integers, got "
                      f"{','.join(value)!r}") from None
  if kind == "strs":
    return tuple(str(v).strip() for v in value if str(v).strip())
  return value


def from_mapping(cls, values: dict, **overrides):
  """The validated ``cls`` from saved flag values (run_info.json's "config"), by flag name;
  fields missing there take their defaults (a run saved before the field existed)."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in flag_fields(cls):
    if flag_name(f) in values:
      value = values[flag_name(f)]
      kind, _ = value_kind(hints[f.name])
      kwargs[f.name] = parse_value(cls.__name__, f, kind, value) if kind in ("ints", "strs") else value
  kwargs.update(overrides)
  config = cls(**kwargs)
  validate(config)
  return config


def validate(config) -> None:
  """Runs every field's check, then the class's own ``check()`` for cross-field rules.

  Raises:
    UserError: ``--name must be ..., got value`` for the first bad field.
  """
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    choices = f.metadata.get("choices")
    label = f"--{flag_name(f) or f.name}"
    if choices is not None and value not in choices:
      raise UserError(f"{label} must be one of {', '.join(map(str, choices))}, got {value!r}")
    check = f.metadata.get("check")
    if check is not None and value is not None:
      predicate, requirement = check
      try:
        ok = bool(predicate(value))
      except (TypeError, ValueError):
        ok = False
      if not ok:
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        raise UserError(f"{label} {requirement}, got {shown!r}")
  extra = getattr(config, "check", None)
  if callable(extra):
    extra()


def sweepable_fields(cls) -> list[str]:
  """Names of the float fields marked ``sweepable`` (hyperparameters a sweep may vary)."""
  return [f.name for f in dataclasses.fields(cls) if f.metadata.get("sweepable")]


def to_dict(config) -> dict:
  """The dataclass as a JSON-friendly dict (tuples as lists)."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
