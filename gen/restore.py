"""A finished (or stopped) run, loaded back for analysis: its config, family,
data and the parameters it evaluates with.

  run = restore.load_run("runs/vae")
  codes = run.family.codes(run.params, batch)

Reads `<workdir>/config.json` and the newest checkpoint; builds nothing the
run did not have, and changes nothing in the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from gen import data as data_lib
from gen import families
from gen.errors import UserError
from gen.train import checkpoint as checkpoint_lib
from gen.train import sharding, steps


@dataclasses.dataclass
class Run:
  workdir: str
  config: ml_collections.ConfigDict
  family: Any
  dataset: Any
  params: Any  # the evaluation parameters (EMA when the run kept one), on the host
  step: int


def load_run(workdir: str, config_overrides: dict | None = None) -> Run:
  """The run in `workdir`, restored from its newest checkpoint.

  config_overrides: {"eval.iw_samples": 100, ...}, settings that change how
  the family evaluates (never what the parameters are).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir}: no config.json; not a run's workdir")
  with open(path) as file:
    config = ml_collections.ConfigDict(json.load(file))
  for dotted, value in (config_overrides or {}).items():
    section, key = dotted.split(".", 1)
    config[section][key] = value
  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  mesh = sharding.make_mesh(jax.local_devices()[:1])
  tx = family.make_optimizer()
  target = steps.init_state(family, tx, config, mesh)
  checkpoints = checkpoint_lib.Checkpointer(workdir, config.checkpoint)
  try:
    if checkpoints.latest_step() is None:
      raise UserError(f"{workdir}: no checkpoint to load")
    state = checkpoints.restore(target)
  finally:
    checkpoints.close()
  return Run(workdir, config, family, dataset, sharding.to_host(state.eval_params()),
             int(state.step))
