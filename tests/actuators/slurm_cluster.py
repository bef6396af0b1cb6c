"""A real single-node Slurm for the Slurm actuator's tests: Debian's ``slurm-wlm`` and ``munge``, started here.

:class:`SlurmCluster` writes a private ``slurm.conf`` in a temp dir (its own ports, state, spool, pid and log
files; ``AuthType=auth/munge`` over a private ``munged`` with its own key and socket), starts ``munged``,
``slurmctld -D`` and ``slurmd -D`` as child processes (never the packages' system services), and waits until
``sinfo`` shows the node idle. The node is :data:`NODE`, served by this host on 127.0.0.1 (``slurmd -N``).
Every client command the tests run gets ``SLURM_CONF`` pointing at the private file, so a system Slurm is never
touched. :meth:`SlurmCluster.stop` cancels the jobs, stops the daemons and ends whatever a job left running
(the processes whose environment names this cluster's ``slurm.conf``): nothing is left behind.

:func:`require_slurm` finds the binaries: outside CI a missing one skips the test naming it; under ``CI=true``
it fails naming it (``make slurm`` installs both packages when root). ``OPSLOOP_TEST_SLURM_PATH`` overrides where
they are looked for.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import free_port
from tests.requirements_check import SLURM_CLIENTS, require, slurm_search

#: The Slurm node this host runs (its NodeName; slurmd is started as it).
NODE = "sn01"
CLIENTS = SLURM_CLIENTS


def require_slurm() -> dict[str, str]:
    """Where Slurm's tools and munged are (:data:`tests.requirements_check.REQUIRED`): skips the test without
    them, fails it under ``CI=true``."""
    return {key: require(key) for key in ("slurm", "munge")}


def _tool(name: str) -> str:
    path = shutil.which(name, path=slurm_search())
    if path is None:
        raise RuntimeError(f"{name} not found")
    return path


class SlurmCluster:
    """slurmctld, one slurmd (node :data:`NODE`) and munged, private to one test session."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="opsloop-slurm-", dir="/tmp"))
        self.dir.chmod(0o755)  # munged's socket must be reachable through it
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bin_dir = Path(_tool("scontrol")).parent

    # --- the commands --------------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The environment of every Slurm command the tests run: this cluster's ``slurm.conf``."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm client command (``scontrol``, ``squeue`` ...) against this cluster."""
        out = subprocess.run([_tool(args[0]), *args[1:]], env=self.env, cwd=self.dir, capture_output=True,
                             text=True, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
        return out

    def node(self) -> str:
        """``scontrol show node -o`` of :data:`NODE`."""
        return self.run("scontrol", "show", "node", "-o", NODE).stdout.strip()

    def job(self, job_id: str) -> str:
        """``scontrol show job -o`` of one job."""
        return self.run("scontrol", "show", "job", "-o", job_id).stdout.strip()

    def submit(self, name: str, command: str = "sleep 300") -> str:
        """``sbatch --wrap``: the new job's id."""
        out = self.run("sbatch", "--parsable", f"--job-name={name}", "--output=/dev/null", f"--wrap={command}")
        return out.stdout.strip().split(";")[0]

    def jobs(self) -> list[str]:
        return self.run("squeue", "--noheader", "--format=%i").stdout.split()

    # --- life ----------------------------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        """Write the configuration, start munged, slurmctld and slurmd; return once the node is idle.

        Raises:
            RuntimeError: a daemon exited or the node did not come up (with the end of the daemons' logs).
        """
        self._start_munged()
        user = getpass.getuser()
        host = socket.gethostname().split(".")[0]
        (self.dir / "state").mkdir()
        (self.dir / "spool").mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=opsloop-test",
            f"SlurmctldHost={host}(127.0.0.1)",  # slurmctld runs where the name is this host's
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"StateSaveLocation={self.dir / 'state'}",
            f"SlurmdSpoolDir={self.dir / 'spool'}",
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.dir / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.dir / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            f"NodeName={NODE} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN",
            f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        self._spawn("slurmctld", [_tool("slurmctld"), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [_tool("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait(self._idle, "node sn01 idle in sinfo")
        return self

    def _start_munged(self) -> None:
        mdir = self.munge_socket.parent
        mdir.mkdir(mode=0o755)
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn("munged", [_tool("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}",
                               f"--seed-file={mdir / 'munged.seed'}", f"--log-file={mdir / 'munged.log'}"])
        self._wait(self.munge_socket.exists, "munged's socket")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.dir / f"{name}.out").open("wb")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=self.dir, start_new_session=True)
        log.close()

    def _idle(self) -> bool:
        out = self.run("sinfo", "--noheader", f"--nodes={NODE}", "--format=%T", check=False)
        return out.stdout.strip() == "idle"

    def _wait(self, ready: Callable[[], bool], what: str, bound_s: float = 60.0) -> None:
        deadline = time.monotonic() + bound_s
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Slurm test cluster: no {what}" + (f"; {', '.join(dead)} exited" if dead else "")
                                   + "\n" + self.logs())
            time.sleep(0.1)

    def wait(self, ready: Callable[[], bool], what: str, bound_s: float = 60.0) -> None:
        """Poll ``ready`` until true (fails the test after ``bound_s``, with the daemons' logs)."""
        self._wait(ready, what, bound_s)

    def logs(self, lines: int = 15) -> str:
        """The end of every daemon's log."""
        parts = []
        for path in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def reset(self) -> None:
        """Between tests: no jobs, the node idle and without a drain."""
        self.cancel_jobs()
        if "DRAIN" in self.node().split("State=", 1)[1].split()[0]:
            self.run("scontrol", "update", f"NodeName={NODE}", "State=RESUME")
        self._wait(self._idle, "node sn01 idle again")

    def cancel_jobs(self) -> None:
        ids = self.jobs()
        if ids:
            self.run("scancel", *ids, check=False)
            self._wait(lambda: not self.jobs(), "empty queue after scancel")

    def stop(self) -> None:
        """Cancel every job, stop the daemons, end anything left with this cluster's environment, remove the dir."""
        try:
            if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
                self.cancel_jobs()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
            for pid in self.leftovers():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Processes still running with this cluster's ``SLURM_CONF`` (a job's, a slurmstepd): none after stop."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in env.split(b"\0"):
                found.append(int(entry.name))
        return found
