"""Generative adversarial networks (Goodfellow et al., 2014).

One compiled train step holds `config.model.disc_steps` discriminator
updates and then one generator update, each half with its own optax
optimizer (both from config.optimizer; the discriminator's learning rate may
differ: config.model.disc_learning_rate). The step's batch of real images is
split into `disc_steps` equal parts, one per discriminator update, so every
example is seen once per epoch whatever disc_steps is.

Losses (config.model.loss), with D's logit l and sigma the logistic function:
  minimax         D: -log sigma(l_real) - log(1 - sigma(l_fake));
                  G: log(1 - sigma(l_fake))  (the original, saturating game)
  non_saturating  D: as minimax;  G: -log sigma(l_fake)
  hinge           D: relu(1 - l_real) + relu(1 + l_fake);  G: -l_fake
Optional R1 penalty (Mescheder et al., 2018): config.model.r1_weight / 2 *
E |grad_x l(x)|^2 on real data; optional spectral normalization of D
(config.model.spectral_norm_iterations; its power-iteration vectors are
carried between steps in params["spectral"], updated by D's phase and by no
optimizer). With config.model.num_classes > 0 (DCGAN) both players are
class-conditional: the generator sees a class embedding, the discriminator
is a projection discriminator (Miyato and Koyama, 2018); generated examples
in training take the labels of the real batch they are set against, so the
classes are drawn as often as the data has them. With config.train.ema_decay > 0 an
exponential moving average of the generator (only) samples; the
discriminator is evaluated as trained.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from gen.data import to_unit
from gen.evaluate import plots, sampling
from gen.families import FAMILIES
from gen.families.base import Family, balanced_labels, apply_if_finite, example_keys
from gen.models.gan import SPECTRAL_COLLECTION
from gen.train import optim, sharding
from gen.train.state import ema_update

LOSSES = ("minimax", "non_saturating", "hinge")
# The fixed latents whose batch statistics evaluation and sampling use.
_REFERENCE_SEED = 20160610


def discriminator_loss(kind: str, real_logits, fake_logits):
  """[b] logits of real and generated examples -> [b] discriminator losses."""
  if kind == "hinge":
    return jax.nn.relu(1.0 - real_logits) + jax.nn.relu(1.0 + fake_logits)
  # -log sigma(l) = softplus(-l); -log(1 - sigma(l)) = softplus(l).
  return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)


def generator_loss(kind: str, fake_logits):
  """[b] logits of generated examples -> [b] generator losses."""
  if kind == "minimax":
    return -jax.nn.softplus(fake_logits)  # log(1 - sigma(l)): flat where D wins
  if kind == "non_saturating":
    return jax.nn.softplus(-fake_logits)  # -log sigma(l)
  if kind == "hinge":
    return -fake_logits
  raise ValueError(f"config.model.loss={kind!r} is not known; valid: {', '.join(LOSSES)}")


def mode_coverage(points, modes, std: float, min_fair_share: float = 0.25) -> dict:
  """How a sample of 2-D points spreads over the modes of a Gaussian mixture.

  A point belongs to its nearest mode when it lies within 3 std of it (a
  "high-quality" point, as in VEEGAN, Srivastava et al., 2017); otherwise it
  is far from every mode. A mode is covered when it holds at least
  `min_fair_share` of its fair share (1 / number of modes) of all points.
  Returns per-mode shares, modes covered, and the share of far points.
  """
  points, modes = np.asarray(points, np.float64), np.asarray(modes, np.float64)
  distances = np.linalg.norm(points[:, None, :] - modes[None], axis=-1)
  nearest = distances.argmin(axis=1)
  close = distances.min(axis=1) <= 3.0 * std
  finite = np.all(np.isfinite(points), axis=1)
  shares = np.bincount(nearest[close & finite], minlength=len(modes)) / len(points)
  return {"mode_shares": shares.round(4).tolist(),
          "modes_covered": int(np.sum(shares >= min_fair_share / len(modes))),
          "num_modes": len(modes),
          "far_share": float(1.0 - shares.sum())}


@FAMILIES.register("gan")
class GAN(Family):
  config_keys = ("loss", "disc_steps", "r1_weight", "disc_learning_rate")

  @property
  def latent_dim(self) -> int:
    return self.model.latent_dim

  @property
  def kind(self) -> str:
    return self.config.model.get("loss", "non_saturating")

  @property
  def disc_steps(self) -> int:
    return self.config.model.get("disc_steps", 1)

  @property
  def num_classes(self) -> int:
    """Classes both players are conditioned on (0: unconditional)."""
    return getattr(self.model, "num_classes", 0)

  def labels_of(self, batch):
    """The batch's int32 labels for a conditional GAN; None otherwise."""
    return batch["label"].astype(jnp.int32) if self.num_classes else None

  def balanced_labels(self, num: int):
    """[num] labels 0, 1, ..., C-1, 0, ...: what unlabelled sampling of a
    conditional GAN draws (None for an unconditional one)."""
    return balanced_labels(num, self.num_classes)

  def check_config(self) -> list[str]:
    model, data = self.config.model, self.config.data
    if self.kind not in LOSSES:
      raise ValueError(f"config.model.loss={self.kind!r} is not known; valid: "
                       f"{', '.join(LOSSES)}")
    steps = self.disc_steps
    if not isinstance(steps, int) or steps < 1:
      raise ValueError(f"config.model.disc_steps={steps!r} must be an integer >= 1")
    if self.config.train.batch_size % steps:
      raise ValueError(f"config.train.batch_size={self.config.train.batch_size} must be a "
                       f"multiple of config.model.disc_steps={steps}: each discriminator "
                       f"update takes an equal part of the batch")
    if model.get("r1_weight", 0.0) < 0:
      raise ValueError(f"config.model.r1_weight={model.r1_weight!r} must be >= 0")
    if model.get("disc_learning_rate", 0.0) < 0:
      raise ValueError(f"config.model.disc_learning_rate={model.disc_learning_rate!r} must "
                       f"be >= 0 (0 = config.optimizer.learning_rate)")
    classes = model.get("num_classes", 0)
    if not isinstance(classes, int) or classes < 0:
      raise ValueError(f"config.model.num_classes={classes!r} must be an integer >= 0")
    if classes > (self.info.num_classes or 0):
      raise ValueError(f"config.model.num_classes={classes}, but {data.name} has "
                       f"{self.info.num_classes or 'no'} class labels")
    is_image = self.info.kind == "image"
    if is_image != (model.name == "dcgan"):
      raise ValueError(f"config.model.name={model.name!r} does not fit {self.info.name} "
                       f"({self.info.kind} data): use dcgan for images, mlp_gan for points")
    if is_image and (data.scale != "symmetric" or data.binarize != "none" or data.dequantize):
      raise ValueError("the generator ends in tanh: set config.data.scale='symmetric', "
                       "config.data.binarize='none', config.data.dequantize=False")
    return []

  # --- setup -----------------------------------------------------------------
  def init_params(self, rng):
    """{"generator", "discriminator"} parameters, and "spectral": the power
    iteration's vectors when the discriminator is spectrally normalized
    (state, not parameters: no optimizer touches them)."""
    z = jnp.zeros((2, self.latent_dim), jnp.float32)
    x = jnp.zeros((2, *self.info.shape), jnp.float32)
    labels = jnp.zeros((2,), jnp.int32) if self.num_classes else None
    variables = self.model.init(rng, z, x, labels)
    params = dict(variables["params"])
    if SPECTRAL_COLLECTION in variables:
      params["spectral"] = variables[SPECTRAL_COLLECTION]
    return params

  def num_params(self, params) -> int:
    trained = {k: v for k, v in params.items() if k != "spectral"}
    return sum(x.size for x in jax.tree_util.tree_leaves(trained))

  def make_optimizer(self):
    """{"generator": tx, "discriminator": tx}: one optax optimizer per player."""
    opt = self.config.optimizer
    disc = opt.copy_and_resolve_references()
    disc.learning_rate = self.config.model.get("disc_learning_rate", 0.0) or opt.learning_rate
    steps = self.config.train.num_steps
    return {"generator": optim.make_optimizer(opt, steps),
            "discriminator": optim.make_optimizer(disc, steps)}

  def init_opt_state(self, tx, params):
    return {name: tx[name].init(params[name]) for name in tx}

  # --- the players ---------------------------------------------------------------
  def generate(self, generator_params, z, labels=None, reference_rows: int = 0):
    return self.apply_model({"params": {"generator": generator_params}}, z, labels,
                            reference_rows, method="generate")

  def generate_fixed(self, generator_params, z, labels=None):
    """Images of z that do not depend on the batch they are drawn in.

    With batch norm in the generator, the statistics come from a fixed
    reference batch of config.train.batch_size latents put in front of z
    (what the generator was trained with), so evaluation and sampling give
    each latent one image whatever the evaluation or sampling batch size.
    """
    if not self.model.batch_dependent:
      return self.generate(generator_params, z, labels)
    rows = self.config.train.batch_size
    reference = self.noise(jax.random.PRNGKey(_REFERENCE_SEED), rows).astype(z.dtype)
    if labels is not None:
      # The reference batch draws the classes in turn, as training's batches
      # draw them in the data's proportions (balanced here).
      labels = jnp.concatenate([self.balanced_labels(rows), labels.astype(jnp.int32)])
    out = self.generate(generator_params, jnp.concatenate([reference, z]), labels, rows)
    return out[rows:]

  def discriminate(self, params, x, labels=None, update: bool = False):
    """Logits [b] of D for x (of classes `labels` when conditional); with
    `update`, also the new "spectral" state."""
    variables = {"params": {"discriminator": params["discriminator"]}}
    spectral = params.get("spectral")
    if spectral is not None:
      variables[SPECTRAL_COLLECTION] = spectral
    if update and spectral is not None:
      logits, changed = self.apply_model(variables, x, labels, True, method="discriminate",
                                         mutable=[SPECTRAL_COLLECTION])
      return logits, changed[SPECTRAL_COLLECTION]
    logits = self.apply_model(variables, x, labels, False, method="discriminate")
    return (logits, spectral) if update else logits

  def noise(self, rng, count: int, temperature=1.0):
    return temperature * jax.random.normal(rng, (count, self.latent_dim))

  def example_noise(self, rng, uid):
    """[b, latent] latents, one per example id: the same example gets the same
    latent whatever batch it is evaluated in."""
    keys = example_keys(rng, uid)
    return jax.vmap(lambda key: jax.random.normal(key, (self.latent_dim,)))(keys)

  # --- the two phases of a step ----------------------------------------------------
  def discriminator_phase(self, params, opt_state, real, rng, tx, labels=None):
    """One discriminator update against fresh generated examples (of the
    real examples' classes `labels`, when conditional).

    Returns (discriminator params, its optimizer state, spectral state,
    metrics, gradients); the generator's parameters are read, never changed.
    Real and generated examples go through D in one call, so the power
    iteration advances once per update.
    """
    fake = jax.lax.stop_gradient(self.generate(params["generator"],
                                               self.noise(rng, real.shape[0]), labels))
    r1_weight = self.config.model.get("r1_weight", 0.0)
    count = real.shape[0]
    both_labels = None if labels is None else jnp.concatenate([labels, labels])

    def loss_fn(disc):
      current = dict(params, discriminator=disc)
      logits, spectral = self.discriminate(current, jnp.concatenate([real, fake]),
                                           both_labels, update=True)
      real_logits, fake_logits = logits[:count], logits[count:]
      loss = jnp.mean(discriminator_loss(self.kind, real_logits, fake_logits))
      metrics = {"d_loss": loss, "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
                 "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits))}
      if r1_weight:
        grad_x = jax.grad(lambda x: jnp.sum(self.discriminate(current, x, labels)))(real)
        penalty = jnp.mean(jnp.sum(jnp.square(grad_x.reshape(count, -1)), axis=1))
        metrics["r1_penalty"] = penalty
        loss = loss + 0.5 * r1_weight * penalty
      return loss, (metrics, spectral)

    grads, (metrics, spectral) = jax.grad(loss_fn, has_aux=True)(params["discriminator"])
    updates, disc_opt = tx["discriminator"].update(grads, opt_state["discriminator"],
                                                   params["discriminator"])
    disc = jax.tree_util.tree_map(jnp.add, params["discriminator"], updates)
    return disc, disc_opt, spectral, metrics, grads

  def generator_phase(self, params, opt_state, rng, count: int, tx, labels=None):
    """One generator update through the current discriminator (its examples
    of classes `labels` when conditional).

    Returns (generator params, its optimizer state, metrics, gradients); the
    discriminator's parameters are read, never changed.
    """

    def loss_fn(gen):
      fake = self.generate(gen, self.noise(rng, count), labels)
      fake_logits = self.discriminate(params, fake, labels)
      return jnp.mean(generator_loss(self.kind, fake_logits)), fake_logits

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["generator"])
    updates, gen_opt = tx["generator"].update(grads, opt_state["generator"],
                                              params["generator"])
    gen = jax.tree_util.tree_map(jnp.add, params["generator"], updates)
    return gen, gen_opt, {"g_loss": loss}, grads

  def train_step(self, state, batch, rng, tx):
    data_rng, disc_rng, gen_rng = jax.random.split(rng, 3)
    real = self.prepare(batch, data_rng, train=True)
    steps = self.disc_steps
    parts = real.reshape(steps, real.shape[0] // steps, *real.shape[1:])
    labels = self.labels_of(batch)
    label_parts = None if labels is None else labels.reshape(steps, -1)
    params, opt_state = dict(state.params), dict(state.opt_state)
    disc_metrics, disc_grads = [], []
    for index in range(steps):
      disc, disc_opt, spectral, metrics, grads = self.discriminator_phase(
          params, opt_state, parts[index], jax.random.fold_in(disc_rng, index), tx,
          None if label_parts is None else label_parts[index])
      params["discriminator"], opt_state["discriminator"] = disc, disc_opt
      if spectral is not None:
        params["spectral"] = spectral
      disc_metrics.append(metrics)
      disc_grads.append(grads)
    gen, gen_opt, gen_metrics, gen_grads = self.generator_phase(
        params, opt_state, gen_rng, real.shape[0], tx, labels)
    params["generator"], opt_state["generator"] = gen, gen_opt
    # The discriminator's numbers are those of its last update in the step.
    metrics = dict(disc_metrics[-1], **gen_metrics)
    # Both losses and every gradient must be finite for the step to count.
    finite_inputs = (disc_grads, gen_grads, [m["d_loss"] for m in disc_metrics])
    new_state, metrics = apply_if_finite(state, params, opt_state, gen_metrics["g_loss"],
                                         finite_inputs, metrics, ema_decay=0.0)
    if state.ema_params is not None:
      # EMA of the generator alone; the discriminator (and its spectral state)
      # in eval_params() is the trained one: its average would be a
      # discriminator nobody trained.
      ema_gen = ema_update(state.ema_params["generator"], new_state.params["generator"],
                           self.config.train.ema_decay, state.step + 1)
      new_state = new_state.replace(ema_params=dict(new_state.params, generator=ema_gen))
    return new_state, metrics

  # --- evaluation -------------------------------------------------------------------
  def evaluate(self, params, batch, rng, final=False):
    """Per-example D and G losses. The generated example of each row comes from
    a latent drawn from its example id, through `generate_fixed`: the numbers do
    not depend on the evaluation batch size, and a split of n examples sees n
    latents."""
    real = self.prepare(batch, rng, train=False)
    labels = self.labels_of(batch)
    fake = self.generate_fixed(params["generator"], self.example_noise(rng, batch["uid"]),
                               labels)
    both_labels = None if labels is None else jnp.concatenate([labels, labels])
    logits = self.discriminate(params, jnp.concatenate([real, fake]), both_labels)
    real_logits, fake_logits = logits[:real.shape[0]], logits[real.shape[0]:]
    g_loss = generator_loss(self.kind, fake_logits)
    metrics = {"loss": g_loss, "g_loss": g_loss,
               "d_loss": discriminator_loss(self.kind, real_logits, fake_logits),
               "d_real": jax.nn.sigmoid(real_logits), "d_fake": jax.nn.sigmoid(fake_logits)}
    density = self.true_density()
    if density is not None:
      # How likely the true density finds generated points (precision-like;
      # blind to missing modes, which mode coverage measures). Infinite for a
      # point where the true density is zero, and the mean says so.
      metrics["fake_true_nll"] = -density.log_prob(fake)
    return metrics

  def anomaly_scores(self, params, batch, rng):
    """The discriminator's logit, negated: how unlike the training data D finds x.
    A conditional D scores x as the class it finds most real (the label of an
    out-of-distribution image means nothing)."""
    real = self.prepare(batch, rng, train=False)
    if not self.num_classes:
      return {"discriminator_logit_negated": -self.discriminate(params, real)}
    per_class = [self.discriminate(params, real, jnp.full((real.shape[0],), c, jnp.int32))
                 for c in range(self.num_classes)]
    return {"discriminator_logit_negated": -jnp.max(jnp.stack(per_class), axis=0)}

  def sample(self, params, rng, num: int, temperature=1.0, labels=None):
    """[num, *shape]: images in [0, 1] or points; temperature scales z. A
    conditional GAN draws image i of class labels[i] (default: the classes in
    turn)."""
    if labels is None:
      labels = self.balanced_labels(num)
    elif not self.num_classes:
      raise ValueError("class labels asked of an unconditional GAN "
                       "(config.model.num_classes=0)")
    else:
      labels = jnp.asarray(labels, jnp.int32)
    return self._outputs(params, self.noise(rng, num, temperature), labels)

  def sample_from_keys(self, params, keys, temperature=1.0, labels=None):
    """Image i from keys[i] alone: what sample(params, keys[i], 1) draws, in one
    generator pass (drawn one by one, a batch-norm generator would run its
    reference batch once per image: 65x the work and 20 GB for 256 images)."""
    z = jax.vmap(lambda key: self.noise(key, 1, temperature)[0])(keys)
    return self._outputs(params, z, None if labels is None else jnp.asarray(labels, jnp.int32))

  def _outputs(self, params, z, labels):
    out = self.generate_fixed(params["generator"], z, labels)
    if self.info.kind == "image":
      return jnp.clip(to_unit(out, "symmetric"), 0.0, 1.0)
    return out

  def visualize(self, params, batch, rng):
    # The same z at every evaluation: the grids show one generator evolving.
    return {"samples": self.sample(params, jax.random.PRNGKey(0), batch["x"].shape[0])}

  def report(self, params, dataset, mesh, workdir, step):
    report = sampling.sample_report(self, params, workdir, step, self.config.eval.num_images,
                                    self.config.eval.temperatures)
    density = self.true_density()
    if density is not None and hasattr(density, "modes"):
      report["mode_coverage"] = self._mode_coverage(params, density, workdir, step)
    return report

  def _mode_coverage(self, params, density, workdir, step, num: int = 10_000) -> dict:
    points = jax.jit(self.sample, static_argnums=2)(
        sharding.single_device(params), jax.random.PRNGKey(step), num)
    points = np.asarray(points)
    coverage = mode_coverage(points, density.modes(), density.noise)
    coverage["num_samples"] = num
    plots.save_scatter(os.path.join(workdir, "mode_coverage.png"), points[:2000],
                       title=f"{coverage['modes_covered']}/{coverage['num_modes']} modes, "
                             f"{coverage['far_share']:.1%} far, step {step}")
    return coverage
