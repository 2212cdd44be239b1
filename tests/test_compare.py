"""The family comparison: its report from made-up runs, and one real, restarted comparison."""

import json
import math
import os
import re
import subprocess
import sys

from gen.evaluate import report
from tests.helpers import ROOT, subprocess_env

_OOD = {"mnist": {"auroc": 0.2, "fpr_at_95_tpr": 0.99}, "flipped": {"auroc": 0.7,
                                                                    "fpr_at_95_tpr": 0.8},
        "noise": {"auroc": 1.0, "fpr_at_95_tpr": 0.0}, "mean_in": 3.0}


def _run(family, label, budget, fid, flops_steps, **extra):
  results = {"test": extra.pop("test", {}), "timing": {"train_seconds": budget * 1.1,
                                                       "first_call_seconds": 2.0},
             "sample_quality": {"fid": fid, "fid_val_vs_test": 2.0, "kid": 0.1, "precision": 0.5,
                                "recall": 0.4, "precision_val_vs_test": 0.8,
                                "recall_val_vs_test": 0.8, "num_samples": 500}}
  analysis = {"representation": extra.pop("representation", {"n/a": "no encoder"}),
              "out_of_distribution": extra.pop("ood", {}), "out_of_distribution_missing": {},
              "sampling": {"seconds_per_sample": extra.pop("sample_seconds", 0.001)}}
  return {"name": f"{family}_{budget}s", "family": family, "label": label, "budget": budget,
          "unit": "seconds", "dir": "unused", "steps": flops_steps, "results": results,
          "analysis": analysis}


def _made_up_runs():
  flow_ood = {"bits_per_dim_exact": {**_OOD, "mnist": {**_OOD["mnist"], "mean_out": 2.0}}}
  gan_ood = {**_OOD, "flipped": {"auroc": 0.9, "fpr_at_95_tpr": 0.5}}
  return [
      _run("realnvp", "RealNVP flow", 10, 300.0, 100, test={"bits_per_dim_exact": 3.3},
           ood=flow_ood, representation={"linear_probe_accuracy": 0.7, "kmeans_nmi": 0.4,
                                         "chance_accuracy": 0.1, "code": "z"}),
      _run("realnvp", "RealNVP flow", 30, 200.0, 300, test={"bits_per_dim_exact": 3.2},
           ood=flow_ood, representation={"linear_probe_accuracy": 0.75, "kmeans_nmi": 0.45,
                                         "chance_accuracy": 0.1, "code": "z"}),
      _run("dcgan", "DCGAN", 10, 150.0, 1000, sample_seconds=0.0005,
           ood={"discriminator_logit_negated": gan_ood}),
      _run("dcgan", "DCGAN", 30, 90.0, 3000, sample_seconds=0.0005,
           ood={"discriminator_logit_negated": gan_ood}),
      # A run that never finished must show as such, not vanish.
      {"name": "ddpm_30s", "family": "ddpm", "label": "DDPM", "budget": 30, "unit": "seconds",
       "dir": "unused", "steps": 50},
  ]


def test_the_report_has_every_section_and_names_the_run_behind_each_claim(tmp_path):
  calibration = {"realnvp": {"params": 670_000, "examples_per_second": 150.0,
                             "flops_per_step": 1e9, "device": "cpu"},
                 "dcgan": {"params": 1_600_000, "examples_per_second": 270.0,
                           "flops_per_step": 2e9, "device": "cpu"},
                 "ddpm": {"params": 690_000, "examples_per_second": 95.0, "flops_per_step": None}}
  runs = _made_up_runs()
  paths = report.write(str(tmp_path), runs, calibration,
                       {"data": "fashion_mnist", "budget_unit": "seconds", "command": "compare",
                        "wall_seconds": 60.0, "analysis_examples": 100,
                        "left_out": {"autoencoder (conv)": "no :digits variant"}})
  text = open(paths[0]).read()
  for heading in ("## The answer", "## Every run", "## Spotting what does not belong",
                  "## Samples", "## How to read it"):
    assert heading in text
  assert "Left out: autoencoder (conv) (no :digits variant)" in text
  claims = report.decisions([report.row_of(r, calibration) for r in runs],
                            report.ood_table(report._largest_budget_rows(
                                [report.row_of(r, calibration) for r in runs]), runs)[1])
  by_need = {c["need"]: c for c in claims}
  best = by_need["the best samples, at the largest budget"]
  assert best["choose"] == "DCGAN" and best["evidence"].startswith("dcgan_30s: FD 90")
  assert by_need["an exact likelihood of an image"]["evidence"].startswith("realnvp_30s: 3.2")
  assert by_need["the fastest sampling"]["choose"] == "DCGAN"
  codes = by_need["codes that a linear classifier can read"]
  assert codes["choose"] == "RealNVP flow"
  assert codes["agrees"] == "n/a: the textbook's choice was not in this comparison"
  flipped = by_need["telling flipped images from the test set"]
  assert flipped["choose"] == "DCGAN" and flipped["evidence"].startswith("dcgan_30s: AUROC 0.9")
  assert flipped["agrees"] == "no: the table follows the number"  # the flow ran, and lost
  # Every table cell is a number, text, or "n/a: <why>" (never a bare n/a or None).
  for line in text.splitlines():
    if line.startswith("|") and "---" not in line:
      for cell in line.strip("|").split("|"):
        cell = cell.strip()
        assert cell != "None" and cell != "nan" and cell != report.NA, line
  assert "ddpm_30s" in text and "n/a: the run did not finish" in text
  assert "MNIST 2 bits/dim, lower: MNIST is more likely" in text
  page = open(paths[1]).read()
  assert "src='data:image/png;base64," in page and not re.search(r"src='(?!data:)", page)


def _compare(tmp_path, *extra):
  command = [sys.executable, os.path.join(ROOT, "experiments", "compare.py"),
             f"--workdir={tmp_path / 'compare'}", "--data=digits",
             "--families=autoencoder,vae", "--budget_unit=steps", "--budgets=20",
             f"--classifier={tmp_path / 'classifier'}", "--parallel=2", "--samples=100",
             "--analysis_examples=100", "--calibration_seconds=0.5", *extra]
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=subprocess_env())


def test_a_real_comparison_writes_its_report_and_a_restart_reruns_nothing(tmp_path):
  first = _compare(tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  folder = tmp_path / "compare"
  text = (folder / "report.md").read_text()
  rows = [line for line in text.splitlines() if re.match(r"\| \w+_20steps \|", line)]
  assert {row.split("|")[1].strip() for row in rows} == {"autoencoder_20steps", "vae_20steps"}
  for row in rows:  # measured numbers are finite
    for cell in row.split("|")[5:9]:
      number = cell.strip().split(" ")[0]
      assert number != "n/a" and math.isfinite(float(number)), row
  analysis = json.loads((folder / "vae_20steps" / "analysis.json").read_text())
  assert 0 <= analysis["out_of_distribution"]["bits_per_dim_elbo_bound"]["noise"]["auroc"] <= 1
  assert "MNIST images are (28, 28, 1)" in analysis["out_of_distribution_missing"]["mnist"]
  # Runs' results and analyses (not the report and its JSON, which are rewritten).
  stamps = {p: p.stat().st_mtime for p in folder.rglob("*.json")
            if p.name not in ("calibration.json", "compare.json")}
  second = _compare(tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert second.stderr.count("finished, not run again") == 2
  assert "calibrating" not in second.stderr and "training the feature classifier" not in second.stderr
  assert {p: p.stat().st_mtime for p in stamps} == stamps  # results and analyses reused


def test_flattening_and_the_machine_readable_numbers(tmp_path):
  calibration = {"dcgan": {"params": 1, "examples_per_second": 1.0, "flops_per_step": 2e9,
                           "device": "cpu"},
                 "latent": {"params": 2, "examples_per_second": 1.0, "flops_per_step": 1e9},
                 "latent_first_stage": {"flops_per_step": 3e9}}
  runs = [_run("dcgan", "DCGAN", 10, 150.0, 1000), _run("dcgan", "DCGAN", 30, 140.0, 3000),
          _run("latent", "latent", 10, 300.0, 100), _run("latent", "latent", 30, 100.0, 300)]
  for run, steps in zip(runs[2:], (20, 60)):
    run["first_stage"] = {"dir": "unused", "calibration": "latent_first_stage", "steps": steps,
                          "results": {"timing": {"train_seconds": 5.0}}}
  runs.append({"name": "dcgan_90s", "family": "dcgan", "label": "DCGAN", "budget": 90,
               "unit": "seconds", "dir": "unused", "steps": 9000})
  flat = {e["family"]: e for e in report.convergence(
      [report.row_of(r, calibration) for r in runs])}
  # 150 -> 140 is -6.7%: flat; 300 -> 100 is -67%: still improving.
  assert flat["dcgan"]["flattened"] is True and math.isclose(flat["dcgan"]["change"], -1 / 15)
  assert flat["latent"]["flattened"] is False
  paths = report.write(str(tmp_path), runs, calibration,
                       {"data": "fashion_mnist", "budget_unit": "seconds", "command": "compare",
                        "machine": ["CPU: test"]}, json_copy=str(tmp_path / "docs" / "c.json"))
  assert "## Has each family stopped improving?" in open(paths[0]).read()
  numbers = json.load(open(tmp_path / "docs" / "c.json"))
  assert numbers == json.load(open(tmp_path / "compare.json"))
  by_run = {r["run"]: r for r in numbers["runs"]}
  latent = by_run["latent_30s"]
  # Both stages count: 33 s + 5 s, and 300 x 1e9 + 60 x 3e9 FLOPs.
  assert latent["train_seconds"] == 38.0 and latent["flops"] == 300 * 1e9 + 60 * 3e9
  assert latent["flattened"] is False and latent["fd"] == 100.0 and latent["fd_baseline"] == 2.0
  required = {"run", "family", "budget_seconds", "train_seconds", "steps", "flops", "fd",
              "fd_baseline", "fd_num_samples", "bits_per_dim", "bits_per_dim_kind",
              "linear_probe", "nmi", "auroc", "why"}
  for entry in numbers["runs"]:
    assert required <= set(entry)
    for key, value in entry.items():
      if value is None and key not in ("budget_steps", "first_stage_steps", "guide_steps"):
        assert entry["why"].get(key), (entry["run"], key)
  assert by_run["dcgan_90s"]["why"]["fd"] == "the run did not finish"
  assert by_run["dcgan_30s"]["bits_per_dim"] is None and by_run["dcgan_30s"]["why"]["bits_per_dim"]


def test_the_latent_models_count_every_stage_in_their_budget(tmp_path):
  result = _compare(tmp_path, "--families=latent,latent_guided", "--budgets=50")
  assert result.returncode == 0, result.stderr[-3000:]
  folder = tmp_path / "compare"
  numbers = json.loads((folder / "compare.json").read_text())
  entries = {entry["family"]: entry for entry in numbers["runs"]}
  results = {name: json.loads((folder / name / "results.json").read_text())
             for name in ("latent_50steps_first_stage", "latent_50steps",
                          "latent_guided_50steps_guide", "latent_guided_50steps")}
  first = results["latent_50steps_first_stage"]
  # 20% of 50 steps trained the first stage in its own folder, the rest the second.
  entry = entries["latent"]
  second = results["latent_50steps"]
  assert first["step"] == entry["first_stage_steps"] == 10 and second["step"] == 40
  assert math.isclose(entry["train_seconds"], first["timing"]["train_seconds"]
                      + second["timing"]["train_seconds"])
  assert second["first_stage"]["workdir"] == str(folder / "latent_50steps_first_stage")
  assert math.isfinite(entry["fd"]) and entry["flops"] > 0
  # The autoguided model shares that first stage; its guide trains for 6% of
  # the budget (3 steps, rounded up to the 10 a run takes at least), the model
  # for what is left (37 -> 30), and all three count.
  entry = entries["latent_guided"]
  guide, model = results["latent_guided_50steps_guide"], results["latent_guided_50steps"]
  assert guide["step"] == entry["guide_steps"] == 10 and model["step"] == 30
  assert entry["first_stage_steps"] == 10
  assert math.isclose(entry["train_seconds"], first["timing"]["train_seconds"]
                      + guide["timing"]["train_seconds"] + model["timing"]["train_seconds"])
  config = json.loads((folder / "latent_guided_50steps" / "config.json").read_text())
  assert config["eval"]["guide_workdir"] == str(folder / "latent_guided_50steps_guide")
  assert config["eval"]["guidance_scale"] == 1.5 and math.isfinite(entry["fd"])
  calibration = json.loads((folder / "calibration.json").read_text())
  assert set(calibration) == {"latent", "latent_first_stage", "latent_guide"}
  assert calibration["latent_guide"]["params"] < calibration["latent"]["params"]


def test_a_family_that_has_flattened_gets_no_larger_budget(tmp_path):
  # Budgets of 10 and 11 steps both train 10 (a run's steps are whole tens):
  # the same run twice, so the curve is flat there and the 12-step rung is
  # never run; the budgets are taken smallest first whatever their order.
  result = _compare(tmp_path, "--families=autoencoder", "--budgets=12,10,11")
  assert result.returncode == 0, result.stderr[-3000:]
  folder = tmp_path / "compare"
  numbers = json.loads((folder / "compare.json").read_text())
  assert [entry["run"] for entry in numbers["runs"]] == ["autoencoder_10steps",
                                                         "autoencoder_11steps"]
  assert numbers["runs"][0]["fd"] == numbers["runs"][1]["fd"]
  assert not (folder / "autoencoder_12steps").exists()
  assert numbers["stopped_when_flat"] == {"autoencoder (dense)": 11.0}
  assert "Given no larger budget, having flattened (compare.py --stop_when_flat): " \
         "autoencoder (dense) at 11 steps." in (folder / "report.md").read_text()


def test_a_family_with_its_own_variant_joins_it_to_the_datas():
  """glow_vd is configs/glow.py:vd; on digits, :vd_digits."""
  code = ("import sys; sys.path.insert(0, 'experiments'); import compare; "
          "from absl import flags; flags.FLAGS(['compare', '--workdir=unused', '--data=%s']); "
          "config = compare.load_config('glow_vd'); "
          "print(compare.config_spec('glow_vd'), compare.config_spec('glow'), "
          "config.model.dequantization, config.model.steps_per_scale)")
  for data, expected in (("digits", "configs/glow.py:vd_digits configs/glow.py:digits "
                                    "variational 2"),
                         ("fashion_mnist", "configs/glow.py:vd configs/glow.py variational 8")):
    done = subprocess.run([sys.executable, "-c", code % data], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == expected, done.stdout
