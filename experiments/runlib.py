"""Runs of experiments/main.py as subprocesses: what sweep.py and compare.py share.

Each run is experiments/main.py in its own process and workdir, so a killed
batch of runs resumes every unfinished run from its last checkpoint, and a
run with results.json is finished and is not run again.
"""

from __future__ import annotations

import ast
import concurrent.futures
import importlib
import os
import subprocess
import sys
import time
import types
from typing import Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_spec(spec: str):
  """'configs/vae.py:digits' -> configs.vae.get_config("digits"), "auto" resolved.

  Settings may follow an "@": 'configs/ddpm.py@eval.sampler=ancestral'
  (several joined by "@"); each value is parsed as the type of the default (a tuple as "1/2/2").
  """
  from gen import platform

  spec, *settings = spec.split("@")
  path, _, variant = spec.partition(":")
  module = importlib.import_module(path.removesuffix(".py").replace(os.sep, "."))
  config, _ = platform.resolve(module.get_config(variant))
  for setting in settings:
    key, _, value = setting.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    old = node[leaf]
    if isinstance(old, bool):
      node[leaf] = value in ("True", "true", "1")
    elif isinstance(old, (tuple, list)):
      # "/" between items: commas already separate the specs of a --configs list.
      items = value.strip("()[] ").replace("/", ",")
      node[leaf] = tuple(ast.literal_eval(items + ",")) if items else ()
    else:
      node[leaf] = type(old)(value)
  return config


def compiled_train_step(config) -> types.SimpleNamespace:
  """`config`'s train step on one device, compiled as its runs compile it
  (steps_per_call, unrolling), for benchmarks: family, tx, mesh, the step-0
  state, train_fn(state, batches) and batch(step, count), the `count`
  stacked batches from train step `step`, on the device."""
  import jax

  from gen import data as data_lib
  from gen import families
  from gen.train import sharding, steps

  mesh = sharding.make_mesh(jax.devices()[:1])
  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  tx = family.make_optimizer()

  def batch(step: int, count: int):
    return sharding.put_batch(dataset.train.stacked(step, count), mesh, batch_dim=1)

  return types.SimpleNamespace(
      family=family, tx=tx, mesh=mesh, state=steps.init_state(family, tx, config, mesh),
      train_fn=steps.make_train_fn(family, tx, mesh, config.train.unroll_steps), batch=batch)


def run_command(base_config: str, workdir: str, overrides: dict) -> list[str]:
  """The experiments/main.py command line of one run."""
  flags_ = [f"--config.{key}={flag_value(value)}" for key, value in overrides.items()]
  return [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
          f"--config={base_config}", f"--workdir={workdir}", *flags_]


def flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def is_finished(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, "results.json"))


def launch(name: str, command: list[str], run_dir: str) -> tuple[str, int, float]:
  """Runs `command`, appending its output to <run_dir>/log.txt; (name, status, seconds)."""
  os.makedirs(run_dir, exist_ok=True)
  start = time.time()
  with open(os.path.join(run_dir, "log.txt"), "a") as log:
    code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  return name, code, time.time() - start


def launch_all(jobs: Iterable[tuple[str, list[str], str]], parallel: int,
               report=None) -> list[str]:
  """Runs (name, command, run_dir) jobs, `parallel` at once; returns the failed names.

  report(name, status, seconds) is called as each finishes.
  """
  failed = []
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = [pool.submit(launch, *job) for job in jobs]
    for future in concurrent.futures.as_completed(futures):
      name, code, seconds = future.result()
      if report:
        report(name, code, seconds)
      if code:
        failed.append(name)
  return failed
