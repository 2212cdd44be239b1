"""Builds build/device_carry/: what a GPU machine without network needs from here.

  python experiments/prepare_device_carry.py        # here, where PyPI is reachable

The device image (Python 3.12; jax with CUDA, flax, optax, orbax-checkpoint,
absl-py, torch) lacks ml-collections, diffusers and any dataset, and can
download nothing; at most 64 MiB of ignored files travel with the working
tree. The folder holds:
  wheels/         CPython 3.12 manylinux x86_64 wheels of ml-collections (the
                  range in pyproject.toml) and diffusers 0.42.x with the
                  dependencies the image may lack: the whole closure that
                  `pip download` resolves, less what the image has and is
                  large (numpy, torch, jax, flax, optax, orbax, CUDA)
  fashion-mnist/  the four IDX files of Debian's dataset-fashion-mnist, as they are
  README.txt      what is there, and the line that installs it on the device

Re-running reuses what is there: pip keeps wheels already downloaded
(build/device_carry_downloads/, which also holds the pruned wheels for the
closure check and is not carried), and data files of the right size are not
copied again. The closure is checked by a dry-run install from the carried
wheels alone, for Python 3.12, that must need nothing but the pruned
packages. Fails, naming the file, when the folder passes --limit_mib.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

from absl import app, flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OUT = flags.DEFINE_string("out", os.path.join(_ROOT, "build", "device_carry"),
                           "The folder to build (carried to the device).")
_DOWNLOADS = flags.DEFINE_string(
    "downloads", os.path.join(_ROOT, "build", "device_carry_downloads"),
    "Every downloaded wheel, pruned ones included (a cache; not carried).")
_DATASET_DIR = flags.DEFINE_string("dataset_dir", "/usr/share/datasets/fashion-mnist",
                                   "Where Debian's dataset-fashion-mnist put the IDX files.")
_LIMIT_MIB = flags.DEFINE_float("limit_mib", 60.0, "Largest size of the folder, MiB "
                                "(64 MiB of ignored files travel; the rest is for others).")

DIFFUSERS_REQUIREMENT = "diffusers==0.42.*"
DATASET_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# The device image's interpreter and platform.
TARGET = ("--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
          "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux_2_28_x86_64", "--platform", "any")
# Distributions the image already has and that are large (numpy alone is
# 16 MB): never carried. Names as normalized by `_distribution`.
PRUNED_EXACT = {"numpy", "torch", "jax", "jaxlib", "flax", "optax", "triton"}
PRUNED_PREFIXES = ("orbax", "nvidia-", "jax-cuda", "cuda-")
INSTALL_LINE = ("pip install --no-index --find-links build/device_carry/wheels "
                "ml-collections diffusers")


def _distribution(wheel_name: str) -> str:
  """'PyYAML-6.0-cp312-...whl' -> 'pyyaml' (PEP 503 normalized)."""
  return re.sub(r"[-_.]+", "-", wheel_name.split("-")[0]).lower()


def is_pruned(distribution: str) -> bool:
  name = re.sub(r"[-_.]+", "-", distribution).lower()
  return name in PRUNED_EXACT or name.startswith(PRUNED_PREFIXES)


def ml_collections_requirement() -> str:
  """ml-collections' requirement as pyproject.toml states it, e.g. 'ml-collections>=1.1,<2'."""
  with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
  for requirement in dependencies:
    if re.match(r"ml[-_]collections\b", requirement, re.IGNORECASE):
      return requirement
  raise RuntimeError("pyproject.toml: no ml-collections in [project] dependencies")


def _pip(args: list[str], isolated: bool = False) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  if isolated:
    # Only the folders named on the command line: no config file (whose
    # find-links and indexes would add other wheels) and no PIP_* settings.
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
  done = subprocess.run([sys.executable, "-m", "pip", *args], env=env,
                        capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f"pip {args[0]} failed ({done.returncode}):\n"
                       f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
  return done


def copy_dataset(out: str) -> list[str]:
  """Copies the four IDX files into out/fashion-mnist (skipping same-size copies)."""
  missing = [name for name in DATASET_FILES
             if not os.path.isfile(os.path.join(_DATASET_DIR.value, name))]
  if missing:
    raise FileNotFoundError(
        f"{_DATASET_DIR.value}: missing {', '.join(missing)}; install Debian's package: "
        f"apt-get install -y dataset-fashion-mnist (or pass --dataset_dir)")
  target = os.path.join(out, "fashion-mnist")
  os.makedirs(target, exist_ok=True)
  for name in DATASET_FILES:
    source, copy = os.path.join(_DATASET_DIR.value, name), os.path.join(target, name)
    if not (os.path.isfile(copy) and os.path.getsize(copy) == os.path.getsize(source)):
      shutil.copyfile(source, copy)
  return [os.path.join(target, name) for name in DATASET_FILES]


def download_wheels(requirements: list[str], downloads: str) -> list[str]:
  """pip download of the closure into `downloads` (reusing files there); the wheel names."""
  os.makedirs(downloads, exist_ok=True)
  before = set(os.listdir(downloads))
  _pip(["download", *TARGET, "--dest", downloads, *requirements])
  # A wheel pip did not name this time is from an earlier, different closure.
  report = _dry_run(requirements, [downloads])
  wanted = {os.path.basename(url) for url in report.values()}
  for stale in before - wanted:
    if stale.endswith(".whl"):
      os.remove(os.path.join(downloads, stale))
  return sorted(wanted)


def _dry_run(requirements: list[str], find_links: list[str]) -> dict[str, str]:
  """{distribution: wheel url} that a fresh Python 3.12 install from `find_links`
  alone would take; raises when something is missing."""
  with tempfile.TemporaryDirectory() as scratch:
    report_path = os.path.join(scratch, "report.json")
    links = [arg for folder in find_links for arg in ("--find-links", folder)]
    # --ignore-requires-python: pip 23 checks Requires-Python of a dry run
    # against the running interpreter, not --python-version; the wheels were
    # downloaded for 3.12 already.
    _pip(["install", "--dry-run", "--ignore-installed", "--ignore-requires-python",
          "--no-index", *links, *TARGET, "--target", os.path.join(scratch, "target"),
          "--report", report_path, "--quiet", *requirements], isolated=True)
    with open(report_path) as f:
      report = json.load(f)
  return {_distribution(os.path.basename(item["download_info"]["url"])):
          item["download_info"]["url"] for item in report["install"]}


def fill_wheels(downloaded: list[str], downloads: str, wheels: str) -> list[str]:
  """Copies the unpruned wheels into `wheels` (and removes any other); their names."""
  os.makedirs(wheels, exist_ok=True)
  carried = sorted(name for name in downloaded if not is_pruned(_distribution(name)))
  for name in set(os.listdir(wheels)) - set(carried):
    os.remove(os.path.join(wheels, name))
  for name in carried:
    target = os.path.join(wheels, name)
    if not os.path.isfile(target):
      shutil.copyfile(os.path.join(downloads, name), target)
  return carried


def check_closure(requirements: list[str], wheels: str, downloads: str) -> list[str]:
  """The distributions the install takes from outside `wheels`: all must be pruned ones.

  A dry run for Python 3.12 from the carried wheels plus, standing in for the
  image, the pruned wheels alone (links in a scratch folder).
  """
  with tempfile.TemporaryDirectory() as image:
    for name in os.listdir(downloads):
      if name.endswith(".whl") and is_pruned(_distribution(name)):
        os.symlink(os.path.join(downloads, name), os.path.join(image, name))
    taken = _dry_run(requirements, [wheels, image])
  outside = sorted(name for name, url in taken.items()
                   if not url.startswith("file://" + os.path.abspath(wheels) + "/"))
  unexpected = [name for name in outside if not is_pruned(name)]
  if unexpected:
    raise RuntimeError(f"the install needs {', '.join(unexpected)}, which "
                       f"{wheels} lacks and the device image is not known to have")
  return outside


def _mib(size: int) -> str:
  return f"{size / 2 ** 20:.1f} MiB"


def write_readme(out: str, requirements: list[str], carried: list[str],
                 from_image: list[str], data_files: list[str]) -> None:
  wheels = os.path.join(out, "wheels")
  lines = [
      "device_carry: what the GPU machine (no network; Python 3.12 with jax/CUDA, flax,",
      "optax, orbax-checkpoint, absl-py, torch) needs from outside, written by",
      "experiments/prepare_device_carry.py. It is git-ignored (/build/): send it",
      "beside the working tree as an ignored path, build/device_carry.",
      "",
      "Install on the device (from the repository root):",
      f"  {INSTALL_LINE}",
      "(where pip refuses an externally managed system Python, add --break-system-packages)",
      "",
      "Fashion-MNIST for the configs: --config.data.dir=build/device_carry/fashion-mnist",
      "",
      f"wheels/: CPython 3.12 manylinux x86_64, for {' and '.join(requirements)}, with",
      "every dependency pip resolves, less those the image has and that are large",
      f"(taken from the image: {', '.join(from_image) or 'none'}):",
  ]
  lines += [f"  {name}  ({_mib(os.path.getsize(os.path.join(wheels, name)))})"
            for name in carried]
  lines += ["", "fashion-mnist/: Debian's dataset-fashion-mnist IDX files, as they are:"]
  lines += [f"  {os.path.basename(path)}  ({_mib(os.path.getsize(path))})"
            for path in data_files]
  lines += [
      "",
      "Checked here: `pip install --dry-run --no-index --ignore-installed --find-links",
      "wheels/ (+ the pruned wheels) --python-version 3.12 --platform manylinux...",
      "--target ...` of the same requirements takes every package from wheels/ except",
      f"{', '.join(from_image) or 'none'}, which the image provides.",
  ]
  with open(os.path.join(out, "README.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")


def folder_size(out: str) -> tuple[int, list[tuple[int, str]]]:
  files = [(os.path.getsize(os.path.join(d, name)), os.path.join(d, name))
           for d, _, names in os.walk(out) for name in names]
  return sum(size for size, _ in files), sorted(files, reverse=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out, downloads = os.path.abspath(_OUT.value), os.path.abspath(_DOWNLOADS.value)
  os.makedirs(out, exist_ok=True)
  try:
    data_files = copy_dataset(out)
    requirements = [ml_collections_requirement(), DIFFUSERS_REQUIREMENT]
    downloaded = download_wheels(requirements, downloads)
    wheels = os.path.join(out, "wheels")
    carried = fill_wheels(downloaded, downloads, wheels)
    from_image = check_closure(requirements, wheels, downloads)
  except (FileNotFoundError, RuntimeError) as error:
    raise SystemExit(f"prepare_device_carry: {error}") from None
  write_readme(out, requirements, carried, from_image, data_files)

  total, files = folder_size(out)
  limit = _LIMIT_MIB.value * 2 ** 20
  print(f"{out}: {_mib(total)} in {len(files)} files (limit {_LIMIT_MIB.value:g} MiB)")
  print(f"wheels ({len(carried)}): {', '.join(carried)}")
  print(f"left to the image: {', '.join(from_image) or 'nothing'}")
  if total > limit:
    largest = ", ".join(f"{os.path.relpath(path, out)} ({_mib(size)})" for size, path in files[:3])
    raise SystemExit(f"{out} is {_mib(total)}, over the limit of {_LIMIT_MIB.value:g} MiB "
                     f"(--limit_mib); largest files: {largest}")
  print(f"install on the device: {INSTALL_LINE}")


if __name__ == "__main__":
  app.run(main)
