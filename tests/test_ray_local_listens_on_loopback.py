"""Issue 14: ``batch --ray local`` starts a cluster that only this machine can reach.

A real local batch runs; while its cluster is up, the listening sockets (TCP listening, UDP
bound) of the batch's process tree (the driver, GCS, raylet, workers, the agents) are read from
/proc, and every one must be on loopback.
"""

import ipaddress
import os
import socket
from pathlib import Path

import pytest
from synthetic_shots import write_synthetic_shot
from tiny_models import tiny_model_folder

from poseanything.engine.batch.plan import BatchSettings
from poseanything.engine.batch.runners import run_batch
from poseanything.engine.render import ModelChoice

PROC = Path("/proc")
LISTENING = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}
"""The state, in each /proc/net table, of a socket others can reach: TCP listening, UDP with
no peer."""

pytestmark = pytest.mark.skipif(
    not (PROC / "net" / "tcp").exists(), reason="reads listening sockets from Linux's /proc"
)


def process_tree(root: int) -> dict[int, str]:
    """The pid and command name of ``root`` and of every process descended from it."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while being read
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        parents[int(entry.name)] = int(rest.split()[1])
        names[int(entry.name)] = name
    tree = {root}
    while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    return {pid: names[pid] for pid in tree if pid in names}


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def decode_address(hex_address: str) -> str:
    """/proc/net's address: 32-bit words in the machine's byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(
        int.from_bytes(raw[i : i + 4], "big").to_bytes(4, "little") for i in range(0, len(raw), 4)
    )
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def listening_sockets(pids: dict[int, str]) -> list[tuple[str, str, int, str]]:
    """(protocol, address, port, process name) of every listening socket of ``pids``."""
    owner = {inode: name for pid, name in pids.items() for inode in socket_inodes(pid)}
    found = []
    for protocol, state in LISTENING.items():
        table = PROC / "net" / protocol
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, st, inode = fields[1], fields[3], fields[9]
            if st == state and inode in owner:
                address, port = local.split(":")
                found.append((protocol, decode_address(address), int(port, 16), owner[inode]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_a_local_ray_batch_listens_on_loopback_only(tmp_path):
    pytest.importorskip("ray", reason="the optional ray extra is not installed")
    shot = write_synthetic_shot(tmp_path / "shot", num_frames=4, width=32, height=32)
    model = tiny_model_folder(tmp_path / "model")
    seen: list[tuple[str, str, int, str]] = []

    def look_while_rendering(event):
        if event["event"] == "progress" and not seen:
            seen.extend(listening_sockets(process_tree(os.getpid())))

    summary = run_batch(
        [shot],
        BatchSettings(model=ModelChoice(folder=model), ray="local", out_dir=tmp_path / "out"),
        on_event=look_while_rendering,
    )
    assert summary.counts()["done"] == 1, summary.table()
    names = {name for _, _, _, name in seen}
    assert {"gcs_server", "raylet"} <= names, f"the cluster's servers were not seen: {seen}"
    exposed = [entry for entry in seen if not is_loopback(entry[1])]
    assert not exposed, f"listening outside loopback: {exposed}"
