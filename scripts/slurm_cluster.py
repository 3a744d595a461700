#!/usr/bin/env python3
"""Start and stop a private one-node Slurm cluster on loopback (munge, slurmctld, slurmd, and
optionally slurmdbd + MariaDB for accounting), for tests of repro's Slurm launcher.

    python scripts/slurm_cluster.py start --dir /tmp/slurm [--accounting]   # prints `export ...`
    eval "$(python scripts/slurm_cluster.py env --dir /tmp/slurm)"; sbatch --wrap hostname
    python scripts/slurm_cluster.py stop --dir /tmp/slurm

Everything lives in the one directory: config, munge key and socket, state, spool, logs, the
database, and `pids.json`, the daemons this script started; `stop` signals exactly those pids.
Needs root and Debian's packages (the error names the apt-get command). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_NAME = "repro"
NODE = "localhost"
PARTITION = "debug"
# Debian package -> the programs this script runs from it.
PACKAGES = {
    "slurm-wlm": "slurmctld slurmd sinfo sbatch squeue scancel scontrol sacct".split(),
    "munge": ["munged", "munge"],
}
# The server's -core package, not mariadb-server: that one's scripts create and start a system
# database in /var/lib/mysql and a mysql user, which its purge leaves behind (measured).
ACCOUNTING_PACKAGES = {
    "slurmdbd": ["slurmdbd", "sacctmgr"],
    "mariadb-server-core": ["mariadbd", "mariadb-install-db"],
    "mariadb-client-core": ["my_print_defaults"],  # mariadb-install-db runs it
}


class ClusterError(RuntimeError):
    """The cluster could not be started (or stopped); the message says what to do."""


def missing_packages(accounting: bool) -> list[str]:
    """The Debian packages whose programs are not on PATH."""
    wanted = dict(PACKAGES, **(ACCOUNTING_PACKAGES if accounting else {}))
    return [pkg for pkg, progs in wanted.items() if not all(_which(p) for p in progs)]


def apt_command(packages: list[str]) -> str:
    return "apt-get update && apt-get install -y --no-install-recommends " + " ".join(packages)


def _which(prog: str) -> str | None:
    # sbin is not on every root PATH (e.g. `sudo` or a minimal container shell).
    return shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterError("MemTotal not found in /proc/meminfo")


@dataclass
class Cluster:
    """A one-node cluster living in `root`. `start()` then `stop()`; `env()` for clients."""

    root: Path
    accounting: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per start step
    ports: dict[str, int] = field(default_factory=dict)
    db_password: str = field(default="", repr=False)
    _procs: dict[int, subprocess.Popen] = field(default_factory=dict, repr=False)

    # ---- paths and environment ----------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids.json"

    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, sacct, submitit) needs: the config names everything else."""
        return {"SLURM_CONF": str(self.conf)}

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    # ---- start --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> dict[str, float]:
        """Write the config, start the daemons, wait until the node is idle. Returns step timings (s)."""
        missing = missing_packages(self.accounting)
        if missing:
            raise ClusterError(
                f"missing Debian packages {', '.join(missing)} (their programs are not on PATH); "
                f"as root run: {apt_command(missing)}"
            )
        if os.geteuid() != 0:
            raise ClusterError("starting the cluster needs root (slurmd runs jobs as their user)")
        if self.pids_file.exists() and self._alive_recorded():
            raise ClusterError(f"a cluster recorded in {self.pids_file} is running: stop it first")
        t0 = time.monotonic()
        try:
            self._write_files()
            self._step("munged", self._start_munge, timeout_s)
            if self.accounting:
                self._step("mariadbd", self._start_mariadb, timeout_s)
                self._step("slurmdbd", self._start_slurmdbd, timeout_s)
            self._step("slurmctld", self._start_slurmctld, timeout_s)
            if self.accounting:
                # After slurmctld: `sacctmgr add cluster` before it hangs (measured, design.md).
                self._step("sacctmgr add cluster", self._add_cluster, timeout_s)
            self._step("slurmd", self._start_slurmd, timeout_s)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self.timings

    def _step(self, name: str, fn: Callable[[float], None], timeout_s: float) -> None:
        t = time.monotonic()
        fn(timeout_s)
        self.timings[name] = time.monotonic() - t

    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket directory that others cannot traverse, and a key that others
        # can read or a key directory they can write (measured: "execute permissions for all
        # required" on a 0700 directory).
        for d in (self.root, self.root / "munge"):
            d.chmod(0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.ports = {name: _free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mysql")}
        self.conf.write_text(self._slurm_conf())
        if self.accounting:
            self.db_password = secrets.token_hex(16)
            dbd = self.root / "etc" / "slurmdbd.conf"
            dbd.write_text(self._slurmdbd_conf())
            dbd.chmod(0o600)  # slurmdbd refuses a readable config (it holds the DB password)

    def _slurm_conf(self) -> str:
        r = self.root
        cpus = len(os.sched_getaffinity(0))
        # Below the machine's memory, or slurmd drains the node ("Low RealMemory").
        mem = int(_mem_mb() * 0.9)
        if self.accounting:
            acct = [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=localhost",
                f"AccountingStoragePort={self.ports['slurmdbd']}",
                # The munge socket for talking to slurmdbd is this key, not AuthInfo: sacct and
                # sacctmgr use it (slurm.conf(5), AccountingStoragePass).
                f"AccountingStoragePass={self.munge_socket}",
            ]
        else:
            acct = ["AccountingStorageType=accounting_storage/none"]
        lines = [
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={NODE}(127.0.0.1)",
            f"SlurmctldPort={self.ports['slurmctld']}",
            f"SlurmdPort={self.ports['slurmd']}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            # No cgroups in containers: track processes through /proc, bind nothing.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "DefMemPerCPU=512",
            "ReturnToService=2",
            # submitit's job ignores SIGTERM (its SignalHandler.bypass), so a cancelled or
            # timed-out job lives until SIGKILL, KillWait seconds later (default 30).
            "KillWait=5",
            "MpiDefault=none",
            "MailProg=/bin/true",  # the default /bin/mail is absent: an error line at each start
            *acct,
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _slurmdbd_conf(self) -> str:
        r = self.root
        lines = [
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost",
            "DbdAddr=127.0.0.1",
            f"DbdPort={self.ports['slurmdbd']}",
            "SlurmUser=root",
            f"PidFile={r / 'slurmdbd.pid'}",
            f"LogFile={r / 'log' / 'slurmdbd.log'}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.ports['mysql']}",
            "StorageUser=slurm",
            f"StoragePass={self.db_password}",
            "StorageLoc=slurm_acct_db",
        ]
        return "\n".join(lines) + "\n"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Start a daemon in the foreground of its own session; record its pid at once."""
        log = (self.root / "log" / f"{name}.out").open("ab")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._client_env(),
            start_new_session=True,  # a Ctrl-C in the caller's terminal does not reach it
        )
        log.close()
        self._procs[proc.pid] = proc
        recorded = self._recorded()
        recorded.append({"name": name, "pid": proc.pid, "exe": Path(argv[0]).name})
        self.pids_file.write_text(json.dumps(recorded, indent=1))
        return proc

    def _wait(
        self, what: str, ready: Callable[[], bool], proc: subprocess.Popen, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"{what} exited with {proc.returncode}: {self._log_tail(what)}")
            if ready():
                return
            time.sleep(0.1)
        raise ClusterError(f"{what} not ready after {timeout_s:.0f} s: {self._log_tail(what)}")

    def _log_tail(self, name: str, n: int = 8) -> str:
        tails = []
        for log in sorted((self.root / "log").glob(f"{name}*")):
            lines = log.read_text(errors="replace").strip().splitlines()[-n:]
            if lines:
                tails.append(f"\n--- {log} ---\n" + "\n".join(lines))
        return "".join(tails) or "(no log)"

    def _run(self, argv: list[str], timeout_s: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, env=self._client_env(), capture_output=True, text=True, timeout=timeout_s
        )

    def _start_munge(self, timeout_s: float) -> None:
        m = self.root / "munge"
        proc = self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--seed-file={m / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )

        def ready() -> bool:
            if not self.munge_socket.exists():
                return False
            return self._run([_which("munge"), "-n", "-S", str(self.munge_socket)]).returncode == 0

        self._wait("munged", ready, proc, timeout_s)

    def _start_mariadb(self, timeout_s: float) -> None:
        db = self.root / "db"
        if not (db / "mysql").exists():
            out = self._run(
                [
                    _which("mariadb-install-db"),
                    "--no-defaults",
                    f"--datadir={db}",
                    "--user=root",
                    "--skip-test-db",
                    "--auth-root-authentication-method=socket",
                ],
                timeout_s=timeout_s,
            )
            if out.returncode:
                raise ClusterError(f"mariadb-install-db failed: {out.stdout[-800:]}{out.stderr}")
        # The slurmdbd user, created at each start (idempotent); reachable on loopback only.
        init = self.root / "etc" / "mariadb-init.sql"
        init.write_text(
            f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';\n"
            f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';\n"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\n"
        )
        init.chmod(0o600)
        proc = self._spawn(
            "mariadbd",
            [
                _which("mariadbd"),
                "--no-defaults",
                f"--datadir={db}",
                f"--socket={db / 'mysqld.sock'}",
                f"--pid-file={db / 'mysqld.pid'}",
                f"--log-error={self.root / 'log' / 'mariadbd.log'}",
                f"--port={self.ports['mysql']}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--init-file={init}",
                "--user=root",
                # slurmdbd's schema wants these (it warns below 64M buffer pool / 900 s timeout).
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
        )
        self._wait("mariadbd", lambda: _port_open(self.ports["mysql"]), proc, timeout_s)

    def _start_slurmdbd(self, timeout_s: float) -> None:
        proc = self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: _port_open(self.ports["slurmdbd"]), proc, timeout_s)

    def _start_slurmctld(self, timeout_s: float) -> None:
        proc = self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
        ping = [_which("scontrol"), "ping"]
        self._wait("slurmctld", lambda: "UP" in self._run(ping).stdout, proc, timeout_s)

    def _add_cluster(self, timeout_s: float) -> None:
        argv = [_which("sacctmgr"), "-i", "add", "cluster", CLUSTER_NAME]
        out = self._run(argv, timeout_s=timeout_s)
        if out.returncode and "already exists" not in out.stdout + out.stderr:
            raise ClusterError(f"{shlex.join(argv)} failed: {out.stdout}{out.stderr}")

    def _start_slurmd(self, timeout_s: float) -> None:
        proc = self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE])
        sinfo = [_which("sinfo"), "-h", "-N", "-o", "%t"]
        self._wait("slurmd", lambda: self._run(sinfo).stdout.strip() == "idle", proc, timeout_s)

    # ---- stop ---------------------------------------------------------------------------------
    def _recorded(self) -> list[dict]:
        if not self.pids_file.exists():
            return []
        return json.loads(self.pids_file.read_text())

    def _alive_recorded(self) -> bool:
        return any(_is(p["pid"], p["exe"]) for p in self._recorded())

    def stop_daemon(self, name: str, timeout_s: float = 15.0) -> str:
        """Stop one daemon (e.g. slurmctld, as a crash of the controller would leave the cluster)
        by its recorded pid; `restart_slurmctld` starts the controller again."""
        for entry in reversed(self._recorded()):
            if entry["name"] == name and _is(entry["pid"], entry["exe"]):
                how = _terminate(
                    entry["pid"], entry["exe"], self._procs.get(entry["pid"]), timeout_s
                )
                return f"{name} (pid {entry['pid']}) {how}"
        raise ClusterError(f"no running {name} is recorded in {self.pids_file}")

    def restart_slurmctld(self, timeout_s: float = 60.0) -> None:
        """Start slurmctld again after stop_daemon: it reads the jobs back from its state files."""
        self._start_slurmctld(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> list[str]:
        """Stop the daemons recorded in pids.json, newest first, by pid; returns what was done."""
        done = []
        for entry in reversed(self._recorded()):
            pid, exe, name = entry["pid"], entry["exe"], entry["name"]
            if not _is(pid, exe):  # gone already, or the pid now belongs to someone else
                done.append(f"{name} (pid {pid}) was not running")
                continue
            how = _terminate(pid, exe, self._procs.get(pid), timeout_s)
            done.append(f"{name} (pid {pid}) {how}")
        if self.pids_file.exists():
            self.pids_file.unlink()
        return done


def _is(pid: int, exe: str) -> bool:
    """Whether pid is alive (not a zombie) and runs `exe`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and Path(cmd).name == exe


def _terminate(pid: int, exe: str, proc: subprocess.Popen | None, timeout_s: float) -> str:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child, or it lingers as a zombie
            if not _is(pid, exe):
                return f"stopped ({sig.name})"
            time.sleep(0.05)
    raise ClusterError(f"{exe} (pid {pid}) survived SIGKILL")


# ---- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("start", "write the config, start the daemons, print the environment"),
        ("stop", "stop the daemons recorded in DIR/pids.json"),
        ("env", "print `export SLURM_CONF=...` for a shell"),
    ):
        p = sub.add_parser(name, help=text)
        if name == "start":
            p.add_argument("--dir", type=Path, help="the cluster's directory (default: a new one)")
            p.add_argument("--accounting", action="store_true", help="also slurmdbd + MariaDB")
        else:
            p.add_argument("--dir", type=Path, required=True, help="the directory `start` used")
    args = parser.parse_args(argv)
    if args.command == "start" and args.dir is None:
        args.dir = Path(tempfile.mkdtemp(prefix="repro-slurm-"))
    cluster = Cluster(args.dir.resolve(), accounting=getattr(args, "accounting", False))
    try:
        if args.command == "start":
            timings = cluster.start()
            took = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
            print(f"# cluster up in {cluster.root} ({took})", file=sys.stderr)
        if args.command in ("start", "env"):
            for k, v in cluster.env().items():
                print(f"export {k}={shlex.quote(v)}")
        if args.command == "stop":
            for line in cluster.stop():
                print(line)
    except ClusterError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
