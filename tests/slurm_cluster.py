"""A real single-node Slurm cluster under one folder: its own munged, slurmctld and slurmd.

`SlurmCluster(root).start()` writes a minimal slurm.conf (one node named after this host with its CPUs
and memory, a `debug` partition, no accounting), starts the three daemons in the foreground with their
own munge key and socket and free ports, and waits until `sinfo` shows the node idle; `stop()` ends
them. Slurm's commands find the cluster through `SLURM_CONF` (`cluster.env`). The daemons run as root.

By hand (docs/slurm-test-cluster.md): `python tests/slurm_cluster.py start DIR` prints the `export
SLURM_CONF=...` line and leaves the daemons running; `python tests/slurm_cluster.py stop DIR` ends them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
START_TIMEOUT_S = 60
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])

SLURM_CONF = """\
ClusterName=textsvae-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=10
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def which(name: str) -> str | None:
    """A Slurm or munge binary: on PATH, or in the sbin folders where Debian puts the daemons."""
    return shutil.which(name, path=SEARCH_PATH)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if which(name) is None]


def skip_reason() -> str:
    """Why a real cluster cannot start here ('' if it can)."""
    missing = missing_binaries()
    if missing:
        return (f"Slurm binaries not found ({', '.join(missing)}): apt-get install slurmctld slurmd slurm-client "
                f"munge (.ci/run does)")
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (slurmd starts the jobs)"
    return ""


def free_ports(n: int) -> list[int]:
    """n distinct ports that nothing listens on now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def node_resources() -> tuple[int, int]:
    """(CPUs, memory in MB) as slurmd sees this machine (`slurmd -C`)."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return int(fields["CPUs"]), int(fields["RealMemory"])


class SlurmCluster:
    """One node, one `debug` partition, the daemons' files under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH_PATH}

    def start(self) -> "SlurmCluster":
        for sub in ("munge", "state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        cpus, memory_mb = node_resources()
        ctld_port, slurmd_port = free_ports(2)
        self.conf.write_text(SLURM_CONF.format(host=self.host, root=self.root, cpus=cpus, memory_mb=memory_mb,
                                               ctld_port=ctld_port, slurmd_port=slurmd_port))
        munge = self.root / "munge"
        self._spawn("munged", ["-F", "--force", f"--key-file={key}", f"--socket={munge}/munge.socket",
                               f"--pid-file={munge}/munged.pid", f"--log-file={self.root}/log/munged.log",
                               f"--seed-file={munge}/munged.seed"])
        self._wait(lambda: (munge / "munge.socket").exists(), "munged made no socket")
        self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok("scontrol", "ping") and "UP" in self._out("scontrol", "ping"),
                   "slurmctld does not answer")
        self._spawn("slurmd", ["-D", "-N", self.host, "-f", str(self.conf)])
        self._wait(lambda: self._out("sinfo", "-h", "-N", "-o", "%T").strip() == "idle", "the node is not idle")
        (self.root / "run" / "pids").write_text(" ".join(str(p.pid) for p in self.procs.values()))
        return self

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job of the cluster and wait until none is left pending, running or completing."""
        jobs = self._out("squeue", "-h", "-o", "%i").split()
        if jobs:
            self._ok("scancel", *jobs)
        deadline = time.monotonic() + timeout
        while self._out("squeue", "-h", "-o", "%i").split() and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        """End the daemons (slurmd, slurmctld, then munged) and wait for them."""
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def run(self, *args: str) -> str:
        """A Slurm command against this cluster; its stdout (a RuntimeError if it fails)."""
        done = subprocess.run([which(args[0]), *args[1:]], capture_output=True, text=True, env=self.env)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen([which(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        log.close()

    def _ok(self, *args: str) -> bool:
        return subprocess.run([which(args[0]), *args[1:]], capture_output=True, env=self.env).returncode == 0

    def _out(self, *args: str) -> str:
        return subprocess.run([which(args[0]), *args[1:]], capture_output=True, text=True, env=self.env).stdout

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                logs = "; ".join(f"{p.name}: {' | '.join(p.read_text(errors='replace').splitlines()[-3:])}"
                                 for p in sorted((self.root / "log").glob("*")) if p.stat().st_size)
                raise RuntimeError(f"test Slurm cluster: {what}" + (f" ({', '.join(dead)} exited)" if dead else "")
                                   + f"; logs: {logs}")
            time.sleep(0.2)


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    action, root = argv[0], Path(argv[1]).resolve()
    if action == "stop":
        pids = root / "run" / "pids"
        if not pids.exists():
            print(f"no test cluster started in {root}", file=sys.stderr)
            return 1
        for pid in reversed(pids.read_text().split()):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
        pids.unlink()
        print(f"stopped the test cluster in {root}")
        return 0
    reason = skip_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    try:
        cluster = SlurmCluster(root).start()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"node {cluster.host} idle in partition debug; export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
