"""The docs say what the code does: README's experiments table, the commands in the docs, links.

No training: each experiment module runs once with ``--helpfull`` (in a subprocess of its own,
since absl flags are global per process) for its flags and help texts; everything else is read
from the markdown and the sources.

* every entry point in ``experiments/`` (but ``replay``) is a row of README's experiments table;
* every ``python -m experiments.X ...`` in README, WORKSPACE.md, launch/README.md and docs/*.md
  (code blocks and inline code) names an existing module and only flags it defines; the same for
  ``python -m benchmarks.X`` / ``python benchmarks/X.py`` / ``python -m launch.X`` (flags read
  from the script's source);
* every number of a row's headline is in the docs section the row links, and that section holds
  the row's command verbatim;
* no ``--help`` text quotes a measurement (percentages, speed-ups, "A vs B", durations, ...);
* README stays short; every relative link (and its #anchor) resolves; every repository path
  the docs name exists.
"""

from __future__ import annotations

import concurrent.futures
import functools
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
README_MAX_LINES = 270
EXPERIMENTS = sorted(os.path.splitext(os.path.basename(p))[0]
                     for p in glob.glob(os.path.join(ROOT, "experiments", "*.py")))
ENTRY_POINTS = [m for m in EXPERIMENTS if m not in ("__init__", "replay")]
MODULES = [m for m in EXPERIMENTS if m != "__init__"]


def _read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def markdown_files() -> list[str]:
  """README, WORKSPACE.md, launch/README.md and every docs page (those that exist)."""
  fixed = [os.path.join(ROOT, p) for p in ("README.md", "WORKSPACE.md", "launch/README.md")]
  return [p for p in fixed if os.path.exists(p)] + sorted(
      glob.glob(os.path.join(ROOT, "docs", "*.md")))


# --- markdown parsing ------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}```[^\n]*\n(.*?)^ {0,3}```[ \t]*$", re.S | re.M)


def split_code(text: str) -> tuple[list[str], str]:
  """(code blocks: fenced ones and 4-space-indented ones, the prose with both removed)."""
  blocks = FENCE.findall(text)
  prose = FENCE.sub("\n", text)
  kept, indented, previous_blank = [], [], True
  for line in prose.split("\n"):
    if line.startswith("    ") and (indented or previous_blank) and line.strip():
      indented.append(line[4:])
      continue
    if indented and not line.strip():
      indented.append("")
      continue
    if indented:
      blocks.append("\n".join(indented))
      indented = []
    kept.append(line)
    previous_blank = not line.strip()
  if indented:
    blocks.append("\n".join(indented))
  return blocks, "\n".join(kept)


def _clean_command(command: str) -> str:
  command = re.split(r"\s#|;|&&|\|\||\s\|\s|\s>\s|\s&(?:\s|$)", command)[0]
  return " ".join(command.split())


COMMAND = re.compile(r"\bpython3? (?:-m [\w.]+|[\w/]+\.py)\b.*")


def commands(text: str) -> list[str]:
  """Every ``python -m X ...`` / ``python path.py ...`` command in code blocks and inline code,
  continuation lines joined and whitespace collapsed, cut at a comment or a shell operator."""
  blocks, prose = split_code(text)
  found = []
  for block in blocks:
    for line in re.sub(r"\\\n\s*", " ", block).split("\n"):
      found += [_clean_command(m.group(0)) for m in COMMAND.finditer(line)]
  for span in re.findall(r"`([^`]+)`", prose):
    span = " ".join(span.split())
    if span.startswith("experiments.") and " --" in span:  # `experiments.vae --seeds=1`
      span = "python -m " + span
    found += [_clean_command(m.group(0)) for m in COMMAND.finditer(span)]
  return found


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections(text: str) -> dict[str, str]:
  """{anchor: the text from that heading to the next heading of the same or a higher level}."""
  _, prose = split_code(text)
  headings = [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^(#{1,6}) +(.+?)\s*$", prose,
                                                                 re.M)]
  # Headings located in the full text (code blocks included) by their exact line.
  lines = text.split("\n")
  positions, start = [], 0
  for level, title in headings:
    pattern = re.compile(r"^#{%d} +%s\s*$" % (level, re.escape(title)))
    while not pattern.match(lines[start]):
      start += 1
    positions.append((start, level, title))
    start += 1
  out, seen = {}, {}
  for i, (line, level, title) in enumerate(positions):
    end = next((p for p, lv, _ in positions[i + 1:] if lv <= level), len(lines))
    anchor = slug(title)
    if anchor in seen:
      seen[anchor] += 1
      anchor = f"{anchor}-{seen[anchor]}"
    else:
      seen[anchor] = 0
    out[anchor] = "\n".join(lines[line:end])
  return out


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*[kM]?(?![\w])")


def numbers(text: str) -> set[str]:
  text = LINK.sub(lambda m: m.group(0)[:m.group(0).index("](")], text)  # drop link targets
  return set(NUMBER.findall(text.replace("−", "-")))


# --- README's experiments table --------------------------------------------------------------


def readme_rows() -> list[dict]:
  """The rows of the table under README's ``## Experiments``: command, headline, page."""
  section = sections(_read(README))["experiments"]
  rows = []
  for line in section.split("\n"):
    if not line.startswith("|") or re.match(r"^\|[\s|:-]+\|$", line):
      continue
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
    if cells[0] == "experiment":  # the header
      continue
    assert len(cells) == 4, f"README's experiments table: a row of {len(cells)} cells: {line}"
    rows.append({"name": cells[0], "command": cells[1], "headline": cells[2], "page": cells[3],
                 "line": line})
  assert rows, "README has no experiments table under '## Experiments'"
  return rows


def _row_command(row) -> str:
  found = commands(row["command"])
  assert len(found) == 1, f"README row {row['name']!r}: one command expected, got {found}"
  return found[0]


def test_every_experiment_entry_point_is_in_readmes_table():
  listed = set()
  for row in readme_rows():
    module = re.match(r"python -m experiments\.(\w+)", _row_command(row))
    assert module, f"README row {row['name']!r}: the command is not python -m experiments.X"
    listed.add(module.group(1))
  missing = sorted(set(ENTRY_POINTS) - listed)
  assert not missing, f"experiments/ entry points missing from README's table: {missing}"


def test_every_headline_number_has_its_command_beside_it():
  """Each row links a docs section; every number of its headline is in that section, and so
  is the row's command, verbatim (or the row has no number at all: refused too)."""
  for row in readme_rows():
    command = _row_command(row)
    targets = [t for t in LINK.findall(row["headline"]) if t.startswith("docs/")]
    assert targets, f"README row {row['name']!r}: the headline links no docs/ section"
    claimed = numbers(row["headline"])
    assert claimed, f"README row {row['name']!r}: the headline holds no number"
    for target in targets:
      page, _, anchor = target.partition("#")
      path = os.path.join(ROOT, page)
      assert os.path.exists(path), f"README row {row['name']!r}: {page} does not exist"
      assert anchor, f"README row {row['name']!r}: {target} names no section (#anchor)"
      found = sections(_read(path))
      assert anchor in found, f"README row {row['name']!r}: {page} has no section #{anchor}"
      section = found[anchor]
      absent = sorted(claimed - numbers(section))
      assert not absent, (f"README row {row['name']!r}: {absent} not in {target} (the section "
                          f"that should show where the number comes from)")
      assert command in commands(section), (
          f"README row {row['name']!r}: its command `{command}` is not in {target}, which "
          f"shows {commands(section)}")


def test_readme_is_short():
  n = len(_read(README).split("\n"))
  assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


# --- flags of the documented commands --------------------------------------------------------

FLAG_LINE = re.compile(r"^\s+(?:-\S+,)?--(\[no\])?(\w+):", re.M)


@functools.lru_cache(maxsize=None)
def helpfull(module: str) -> str:
  proc = subprocess.run([sys.executable, "-m", f"experiments.{module}", "--helpfull"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  out = proc.stdout + proc.stderr
  assert "Traceback" not in out and FLAG_LINE.search(out), (
      f"python -m experiments.{module} --helpfull did not list its flags:\n{out[-3000:]}")
  return proc.stdout


@pytest.fixture(scope="module")
def all_help() -> dict[str, str]:
  """Every module's --helpfull, two subprocesses at a time."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    return dict(zip(MODULES, pool.map(helpfull, MODULES)))


def flag_names(help_text: str) -> set[str]:
  names = set()
  for negatable, name in FLAG_LINE.findall(help_text):
    names.add(name)
    if negatable:
      names.add("no" + name)
  return names


def used_flags(command: str) -> set[str]:
  """The --names a command passes (not those inside a quoted value: --fixed="--seeds=8")."""
  unquoted = re.sub(r"\"[^\"]*\"|'[^']*'", "", command)
  return set(re.findall(r"(?<![\w-])--([A-Za-z_]\w*)", unquoted))


@functools.lru_cache(maxsize=None)
def script_flags(path: str) -> set[str]:
  """Flags a benchmark or launch script defines, read from its source (absl or argparse)."""
  src = _read(path)
  names = set(re.findall(r"add_argument\(\s*[\"']--(\w+)", src))
  for kind, name in re.findall(r"DEFINE_(\w+)\(\s*[\"'](\w+)", src):
    names.add(name)
    if kind in ("bool", "boolean"):
      names.add("no" + name)
  if "absl" in src:
    names |= {"help", "helpfull", "helpshort", "flagfile"}
  return names


def documented_commands() -> list[tuple[str, str]]:
  return [(os.path.relpath(p, ROOT), c) for p in markdown_files() for c in commands(_read(p))]


def test_documented_commands_name_existing_modules_and_flags(all_help):
  problems, checked = [], 0
  for where, command in documented_commands():
    module = re.match(r"python3? -m experiments\.(\w+)", command)
    script = (re.match(r"python3? -m ((?:benchmarks|launch)(?:\.\w+)+)", command)
              or re.match(r"python3? ((?:benchmarks|launch)/[\w/]+)\.py", command))
    if module:
      if module.group(1) not in all_help:
        problems.append(f"{where}: `{command}`: no module experiments/{module.group(1)}.py")
        continue
      known = flag_names(all_help[module.group(1)])
    elif script:
      path = os.path.join(ROOT, script.group(1).replace(".", "/") + ".py")
      if not os.path.exists(path):
        problems.append(f"{where}: `{command}`: no script {os.path.relpath(path, ROOT)}")
        continue
      known = script_flags(path)
    else:
      continue
    checked += 1
    unknown = sorted(used_flags(command) - known)
    if unknown:
      names = ", ".join("--" + u for u in unknown)
      problems.append(f"{where}: `{command}`: no such flag(s) {names}")
  assert checked > 20, f"only {checked} documented commands found: is the parser broken?"
  assert not problems, "\n".join(problems)


# --- no measurements in --help ---------------------------------------------------------------

MEASURED = {
    "a percentage": r"(?<!\blast )(?<!\bfirst )\b(?!95\s?%)\d[\d.]*\s?%",
    "a ratio or speed-up": r"\d(?:\.\d+)?\s?[×x](?![\w\d])",
    "a comparison word": r"\b(?:measured|faster|slower|speed-?ups?|outperforms?)\b",
    "A vs B": r"\d\s+(?:vs\.?|versus|instead of)\s+-?\d",
    "from A to B": r"\bfrom\s+-?\d+(?:\.\d+)?\s+to\s+-?\d+(?:\.\d+)?\b",
    "a duration": r"\d(?:\.\d+)?\s?(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b",
    "a pointer to the docs": r"README|docs/",
}


def project_help(help_text: str) -> str:
  """The usage text and the help of the flags the project defines (not absl's, chex's, ...)."""
  usage, _, rest = help_text.partition("\nflags:\n")
  parts, keep = [usage], False
  for line in rest.split("\n"):
    if line and not line.startswith(" ") and line.endswith(":"):
      keep = (line.startswith("genrl_jax") or "/experiments/" in line
              or "/genrl_jax/" in line)
      continue
    if keep:
      parts.append(line)
  return " ".join(" ".join(parts).split())


def measurements(text: str) -> list[str]:
  return [f"{kind}: ...{text[max(0, m.start() - 50):m.end() + 30]}..."
          for kind, pattern in MEASURED.items() for m in re.finditer(pattern, text)]


def test_the_measurement_patterns_catch_measurements():
  assert len(measurements(
      "1 raised the classifier score from 8.19 to 8.73, for 1.3x the time (see README); 8.2 vs "
      "7.4; 32 keeps 4 seeds within about 22 minutes; 25 % more examples/s; faster on a CPU")) == 7
  assert not measurements("Strided 4x4 convolutions; mean and 95 % CI; the last 10% of steps; "
                          "2^-13; 784-400-20; Adam 1e-3; target <- tau * online")


def test_no_help_text_quotes_a_measurement(all_help):
  found = [f"experiments.{module}: {hit}" for module, text in all_help.items()
           for hit in measurements(project_help(text))]
  assert not found, "measured numbers in --help (say what the flag does instead):\n" + "\n".join(
      found)


# --- links and paths -------------------------------------------------------------------------


def test_relative_links_and_anchors_resolve():
  problems = []
  for path in markdown_files():
    _, prose = split_code(_read(path))
    for target in LINK.findall(prose):
      if re.match(r"^[a-z]+://|^mailto:", target):
        continue
      file_part, _, anchor = target.partition("#")
      resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
          if file_part else path
      where = os.path.relpath(path, ROOT)
      if not os.path.exists(resolved):
        problems.append(f"{where}: link {target}: no file {os.path.relpath(resolved, ROOT)}")
      elif anchor and resolved.endswith(".md") and anchor not in sections(_read(resolved)):
        problems.append(f"{where}: link {target}: no heading #{anchor} there")
  assert not problems, "\n".join(problems)


def test_repository_paths_named_in_the_docs_exist():
  paths = r"\b(?:genrl_jax|experiments|benchmarks|tests|launch|docs)/[\w./-]*\.(?:py|sh|md|png)\b"
  problems = [f"{os.path.relpath(p, ROOT)}: {name}" for p in markdown_files()
              for name in sorted(set(re.findall(paths, _read(p))))
              if not os.path.exists(os.path.join(ROOT, name))]
  assert not problems, "paths named in the docs that do not exist:\n" + "\n".join(problems)
