"""A three-node OpenSearch cluster on loopback, for scripts/opensearch-cluster: the nodes, their ports and
folders, their configuration, their health.

Every node runs from the work folder's assembled distribution (the one `scripts/opensearch assemble` builds),
as a named instance with its own run/, logs/, tmp/ and data/ under <work>/instances/cluster-node-N/
(enginelib.instances), and from its own copy of the distribution's configuration in which
`discovery.type: single-node` gives way to `discovery.seed_hosts` (the three transport ports) and
`cluster.initial_cluster_manager_nodes` (the three node names). The distribution itself is never changed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

from . import Fail, StartFail, env_port, instances, log, process
from .opensearch import LOGS, RECIPE, RUN, WORK, assemble, cli_env, home_dir

CLUSTER_NAME = "hybrid-rerank-cluster"
SIZE = 3
HTTP_PORT_VAR = "OPENSEARCH_CLUSTER_PORT"  # the first node's HTTP port; the others follow it
TRANSPORT_PORT_VAR = "OPENSEARCH_CLUSTER_TRANSPORT_PORT"  # the first node's transport port
JAVA_OPTS_VAR = "OPENSEARCH_CLUSTER_JAVA_OPTS"
DEFAULT_JAVA_OPTS = "-Xms512m -Xmx512m"
LOCK = WORK / "instances" / "cluster.lock"
HOME_ARG = f"-Dopensearch.path.home={WORK / 'dist'}/"  # the JVM of every node of this work folder
# Settings of the distribution's opensearch.yml that a cluster node sets its own way.
OWN_KEYS = ("cluster.name", "node.name", "discovery.type", "discovery.seed_hosts", "http.port")


class Node(NamedTuple):
    name: str  # node.name, e.g. node-2
    http_port: int
    transport_port: int
    dirs: instances.Instance

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pidfile(self) -> Path:
        return self.dirs.run / "opensearch.pid"

    @property
    def statefile(self) -> Path:
        return self.dirs.run / "state.json"

    @property
    def launcher_log(self) -> Path:
        return self.dirs.logs / "launcher.log"

    @property
    def main_log(self) -> Path:
        return self.dirs.logs / f"{CLUSTER_NAME}.log"

    def pids(self) -> list[int]:
        """The node's live JVM, told apart from every other node of the work folder by its log folder."""
        return process.pids_with_arg(HOME_ARG, f"-Epath.logs={self.dirs.logs}")


def nodes() -> list[Node]:
    http, transport = env_port(HTTP_PORT_VAR, "9270"), env_port(TRANSPORT_PORT_VAR, "9370")
    if abs(http - transport) < SIZE:
        raise Fail(f"{HTTP_PORT_VAR}={http} and {TRANSPORT_PORT_VAR}={transport}: the port ranges overlap")
    return [
        Node(f"node-{i + 1}", http + i, transport + i, instances.instance(WORK, f"cluster-node-{i + 1}"))
        for i in range(SIZE)
    ]


def find(name: str) -> Node:
    """The node called `name` (`node-2`, or just `2`)."""
    for node in nodes():
        if name in (node.name, node.name.removeprefix("node-")):
            return node
    raise Fail(f"no node {name!r} in the cluster: use one of {', '.join(n.name for n in nodes())}")


def urls() -> str:
    """The three HTTP URLs, comma-separated (the form a client's host list and the tests take)."""
    return ",".join(n.url for n in nodes())


# ------------------------------------------------------------------------------------------ distribution


def distribution(ver: str, var: str, java_home: Path) -> Path:
    """The assembled distribution, assembled first (under scripts/opensearch's own lock) only if it is
    missing, so a cluster start never waits on another node's start when there is nothing to build."""
    home = home_dir(ver, var)
    try:
        if json.loads((home / ".assembled.json").read_text()) == {
            "version": ver,
            "variant": var,
            "recipe": RECIPE,
        }:
            return home
    except (OSError, ValueError):
        pass
    fd = process.lock(RUN / "lock")
    try:
        return assemble(ver, var, java_home)
    finally:
        os.close(fd)


def node_yml(dist_yml: str, node: Node, all_nodes: list[Node]) -> str:
    """The distribution's opensearch.yml with the single-node discovery replaced by the cluster's."""
    kept = [
        line
        for line in dist_yml.splitlines()
        if not any(line.strip().startswith(f"{key}:") for key in (*OWN_KEYS, "transport.port"))
    ]
    seeds = ", ".join(f'"127.0.0.1:{n.transport_port}"' for n in all_nodes)
    names = ", ".join(f'"{n.name}"' for n in all_nodes)
    own = [
        "# cluster node written by scripts/opensearch-cluster",
        f"cluster.name: {CLUSTER_NAME}",
        f"node.name: {node.name}",
        f"http.port: {node.http_port}",
        f"transport.port: {node.transport_port}",
        f"discovery.seed_hosts: [{seeds}]",
        f"cluster.initial_cluster_manager_nodes: [{names}]",
    ]
    return "\n".join(kept + own) + "\n"


def write_config(home: Path, node: Node, all_nodes: list[Node]) -> Path:
    """The node's own copy of the distribution's configuration (gc logs in its own log folder)."""
    conf = instances.config_with_extras(
        home / "config", node.dirs.config_copy, "opensearch.yml", "", {str(LOGS): str(node.dirs.logs)}, ""
    )
    yml = conf / "opensearch.yml"
    yml.write_text(node_yml(yml.read_text(), node, all_nodes))
    return conf


def launch(node: Node, home: Path, java_home: Path, data: Path) -> None:
    """Start the node's JVM in the background (the launcher returns at once); health is checked apart."""
    if process.port_open(node.http_port) or process.port_open(node.transport_port):
        raise Fail(
            f"port {node.http_port} or {node.transport_port} on 127.0.0.1 is already in use by another "
            f"process; free it or set {HTTP_PORT_VAR} / {TRANSPORT_PORT_VAR}"
        )
    for d in (data, node.dirs.logs, node.dirs.tmp, node.dirs.run):
        d.mkdir(parents=True, exist_ok=True)
    node.pidfile.unlink(missing_ok=True)
    env = cli_env(java_home, node.dirs.tmp)
    env["OPENSEARCH_JAVA_OPTS"] = os.environ.get(JAVA_OPTS_VAR) or DEFAULT_JAVA_OPTS
    env["OPENSEARCH_PATH_CONF"] = str(write_config(home, node, nodes()))
    writable = [data, node.dirs.logs, node.dirs.tmp, node.dirs.run]
    cmd = [
        *process.drop_root(writable, "OPENSEARCH_DROP_ROOT", "OpenSearch"),
        str(home / "bin" / "opensearch"),
        "-d",
        "-p",
        str(node.pidfile),
        f"-Epath.data={data}",
        f"-Epath.logs={node.dirs.logs}",
    ]
    log(f"starting {node.name} on {node.url} (transport {node.transport_port}, data {data})")
    with open(node.launcher_log, "w") as fh:
        r = subprocess.run(
            cmd,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=home,
            start_new_session=True,
        )
    if r.returncode != 0:
        dump_logs(node)
        raise StartFail(f"{node.name}: launcher exited {r.returncode}: {' '.join(cmd)}")


def dump_logs(node: Node) -> None:
    for path, lines in ((node.launcher_log, 30), (node.main_log, 60)):
        log(f"----- tail of {path} -----")
        log(process.tail(path, lines))


# ------------------------------------------------------------------------------------------------ health


def health(wait_for: str = "yellow", wait: int = 0, among: list[Node] | None = None) -> dict[str, Any] | None:
    """`_cluster/health` from the first of the nodes (`among`, default all) that answers for this cluster,
    asked to wait up to `wait` seconds for `wait_for` and every node; None when none answers."""
    query = f"wait_for_status={wait_for}&wait_for_nodes={SIZE}&timeout={wait}s"
    for node in among or nodes():
        status, body = process.http_get(f"{node.url}/_cluster/health?{query}", timeout=10 + wait)
        # 408: the wait timed out; the body still says where the cluster stands
        if status in (200, 408) and isinstance(body, dict) and body.get("cluster_name") == CLUSTER_NAME:
            return body
    return None


def is_healthy(body: dict[str, Any] | None, wanted: tuple[str, ...]) -> bool:
    return body is not None and body.get("number_of_nodes") == SIZE and body.get("status") in wanted


def describe(body: dict[str, Any] | None) -> str:
    if not body:
        return "no node answers for the cluster (none is running, or no cluster manager is elected yet)"
    return (
        f"{body.get('status')}, {body.get('number_of_nodes')} of {SIZE} nodes, "
        f"{body.get('unassigned_shards')} unassigned shard(s)"
    )
