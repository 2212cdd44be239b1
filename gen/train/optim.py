"""optax optimizers and learning-rate schedules from `config.optimizer`."""

from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta", "rmsprop")
SCHEDULES = ("constant", "cosine")


def make_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Learning rate by step: `schedule` after `warmup_steps` of linear warm-up."""
  lr = opt.learning_rate
  decay_steps = max(num_steps - opt.warmup_steps, 1)
  if opt.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt.end_factor)
  else:
    raise ValueError(f"config.optimizer.schedule={opt.schedule!r} is not known; "
                     f"valid: {', '.join(SCHEDULES)}")
  if opt.warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, lr, opt.warmup_steps)
  return optax.join_schedules([warmup, main], [opt.warmup_steps])


def make_optimizer(opt: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
  """The optimizer `opt.name` with its schedule and optional gradient clipping."""
  lr = make_schedule(opt, num_steps)
  if opt.name == "sgd":
    tx = optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
  elif opt.name == "adam":
    tx = optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  elif opt.name == "adamw":
    tx = optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
  elif opt.name == "adadelta":
    tx = optax.adadelta(lr, rho=opt.rho, eps=opt.adadelta_eps)
  elif opt.name == "rmsprop":
    tx = optax.rmsprop(lr, decay=opt.rho, eps=opt.eps, momentum=opt.momentum or None)
  else:
    raise ValueError(f"config.optimizer.name={opt.name!r} is not known; "
                     f"valid: {', '.join(OPTIMIZERS)}")
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx
