"""A one-node Slurm for the tests: munged, slurmctld and slurmd on this host,
from a slurm.conf written to a temporary folder, stopped afterwards.

Nothing is installed here (the Makefile's test target installs Debian's
slurm-wlm and munge where apt and root exist). `start()` returns None and a
reason when the binaries are missing or the tests do not run as root; the
Slurm tests then skip and say why. Clients find the cluster through the
SLURM_CONF variable of `Cluster.env`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")


@dataclasses.dataclass
class Cluster:
  folder: str
  env: dict
  processes: list

  def stop(self) -> None:
    for process in reversed(self.processes):
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
          process.wait(timeout=15)
        except subprocess.TimeoutExpired:
          process.kill()
    # slurmd's job steps (slurmstepd) outlive it when a test fails part-way.
    subprocess.run(["pkill", "-f", f"slurmstepd.*{self.folder}"], check=False)
    shutil.rmtree(self.folder, ignore_errors=True)

  def run(self, *command, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """A Slurm client command (or srun job) against this cluster; `env` adds variables."""
    return subprocess.run(list(command), env={**os.environ, **(env or {}), **self.env},
                          capture_output=True, text=True, **kwargs)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _config(folder: str, host: str, cpus: int, memory_mb: int, ports: tuple[int, int]) -> str:
  return "\n".join([
      "ClusterName=gentest",
      f"SlurmctldHost={host}",
      "SlurmUser=root",
      "SlurmdUser=root",
      f"SlurmctldPort={ports[0]}",
      f"SlurmdPort={ports[1]}",
      "AuthType=auth/munge",
      "CredType=cred/munge",
      f"AuthInfo=socket={folder}/munge.socket",
      f"StateSaveLocation={folder}/state",
      f"SlurmdSpoolDir={folder}/spool",
      f"SlurmctldPidFile={folder}/slurmctld.pid",
      f"SlurmdPidFile={folder}/slurmd.pid",
      f"SlurmctldLogFile={folder}/slurmctld.log",
      f"SlurmdLogFile={folder}/slurmd.log",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "MpiDefault=none",
      "SchedulerType=sched/builtin",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_CPU",
      "ReturnToService=2",
      "JobAcctGatherType=jobacct_gather/none",
      "AccountingStorageType=accounting_storage/none",
      # Requeued tasks start again at once, not after the default 2 minutes.
      "MinJobAge=300",
      "KillWait=30",
      f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
      f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
  ]) + "\n"


def start(cpus: int | None = None, timeout: float = 60.0):
  """(Cluster, "") when a one-node Slurm came up, else (None, why)."""
  missing = [name for name in _BINARIES if shutil.which(name) is None]
  if missing:
    return None, (f"Slurm/munge binaries missing ({', '.join(missing)}): "
                  f"apt-get install slurm-wlm munge (make test does, as root)")
  if os.geteuid() != 0:
    return None, "slurmd runs jobs as their user only when started as root"
  folder = tempfile.mkdtemp(prefix="gen-slurm-")
  for sub in ("state", "spool"):
    os.makedirs(os.path.join(folder, sub))
  host = socket.gethostname().split(".")[0]
  cpus = cpus or os.cpu_count() or 1
  memory_mb = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2)
  conf = os.path.join(folder, "slurm.conf")
  with open(conf, "w") as file:
    file.write(_config(folder, host, cpus, memory_mb, (_free_port(), _free_port())))
  key = os.path.join(folder, "munge.key")
  with open(key, "wb") as file:
    file.write(os.urandom(1024))
  os.chmod(key, 0o400)
  env = {"SLURM_CONF": conf}
  processes = []
  cluster = Cluster(folder, env, processes)
  try:
    processes.append(subprocess.Popen(
        ["munged", "--foreground", "--force", f"--key-file={key}",
         f"--socket={folder}/munge.socket", f"--pid-file={folder}/munged.pid",
         f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _wait(lambda: os.path.exists(f"{folder}/munge.socket"), timeout, "munged's socket")
    for daemon in (["slurmctld", "-D", "-i", "-f", conf], ["slurmd", "-D", "-f", conf]):
      processes.append(subprocess.Popen(daemon, env={**os.environ, **env},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _wait(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T").stdout, timeout,
          "an idle node in sinfo")
  except RuntimeError as error:
    logs = " ".join(open(os.path.join(folder, name)).read()[-500:]
                    for name in ("slurmctld.log", "slurmd.log")
                    if os.path.exists(os.path.join(folder, name)))
    cluster.stop()
    return None, f"Slurm did not start: {error}; {logs}"
  return cluster, ""


def _wait(ready, timeout: float, what: str) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if ready():
      return
    time.sleep(0.2)
  raise RuntimeError(f"no {what} after {timeout:.0f} s")
