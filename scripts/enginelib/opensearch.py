"""The OpenSearch-specific part of scripts/opensearch: work paths, artifact list, pinned digests, modules,
configuration and assembly of a distribution under .work/opensearch/dist/. See docs/opensearch.md.

The integ-test server zip lacks the lang-painless / analysis-common / mapper-extras modules (2.x); they are
built from their published jars. Plugins are installed from their Maven Central zips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

from . import StartFail, env_port, flag, java, log, maven, process, security

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("OPENSEARCH_WORK_DIR") or (ROOT / ".work" / "opensearch")).resolve()
CACHE = WORK / "cache"  # Maven local repository: downloads and the checksum files published beside them
LOGS = WORK / "logs"
TMP = WORK / "tmp"
RUN = WORK / "run"
DEFAULT_VERSION = "2.19.6"
DEFAULT_NEURAL = "1"
# OPENSEARCH_SECURITY=1: TLS + basic auth (enginelib.security). Maven Central has opensearch-security zips
# only for 2.11.1.0, 2.19.3.0, 2.19.4.0 and 3.4.0.0 (none for 2.19.6.0, 404). 3.4.0.0 cannot be installed on
# the 3.4.0 integ-test zip ("Missing plugin [rule-framework], dependency of [opensearch-security]", a module
# that zip lacks and Maven Central does not publish), and there is no k-NN zip for a 2.19.3 or 2.19.4 server.
# So the 2.19.6 node runs the 2.19.4.0 security plugin, its descriptor's opensearch.version rewritten to the
# server's (same minor line; a patch release keeps the plugin API).
SECURITY_VAR = "OPENSEARCH_SECURITY"
SECURITY_SUFFIX = "-security"  # of the variant: its own distribution, data folder and default instance
SECURITY_PLUGIN_VERSION = {"2.19.6": "2.19.4.0"}  # server version -> opensearch-security zip version
RECIPE = 3  # bump when the assembly recipe changes: forces a rebuild of the distribution
CLUSTER_NAME = "local-opensearch"
INSTANCE_VAR = "OPENSEARCH_INSTANCE"  # a named node beside the default one (enginelib.instances)
EXTRA_SETTINGS_VAR = "OPENSEARCH_EXTRA_SETTINGS"  # lines appended to the node's opensearch.yml

# SHA-256 of artifacts for which Maven Central publishes no checksum file (the 2.19.6.0 plugin zips),
# recorded from the files Maven Central served when this script was written. The server zip is pinned too.
PINNED_SHA256 = {
    "opensearch-2.19.6.zip": "71d6d8b1c637f3faecda0752b184b1cc526fc6eaad59ec1408c6327bb00b9293",
    "opensearch-knn-2.19.6.0.zip": "c21b9565624d29fd4024e3a3902712349006cb7894a73c45d976756a761e628f",
    "neural-search-2.19.6.0.zip": "b38b136b280a219d7f4495dd5d7e11e92a528b874fe940fc8502b8a5c599c820",
    "opensearch-ml-plugin-2.19.6.0.zip": "d0f4c2457ca5557d94ebd7c5e8d650b34326df54ad85851cc2eca0dd86e30d10",
    "opensearch-job-scheduler-2.19.6.0.zip": (
        "c0172f2fb94c0819bbeb9bf21db694e26e285de4dddc9461759d0e0246c998e8"
    ),
    # OpenSearch 3.6.0 (OPENSEARCH_VERSION=3.6.0; k-NN and neural-search only)
    "opensearch-3.6.0.zip": "a91faa1dc1cadc78cb278b4f63847e19e1627a4e9de698e14e7efc14ee37b286",
    "opensearch-knn-3.6.0.0.zip": "ac392ca28a39b3bf290648a422ef30cb149dda2963a9d7feb26060e932341c9a",
    "neural-search-3.6.0.0.zip": "6ef1b206e79391e2e36268e32dc34d27fd8b8a59a8eb0a7393c97d53b038e433",
    # OPENSEARCH_SECURITY=1 (Maven Central also publishes a .sha1 for this one)
    "opensearch-security-2.19.4.0.zip": "1f673622c462c4171a8c53f9b1ad20e5b839834cb79b0d3b388da180a0e514e8",
}

REPO = maven.Repo(
    cache=CACHE, tmp=TMP, pinned_sha256=PINNED_SHA256, allow_unverified_var="OPENSEARCH_ALLOW_UNVERIFIED"
)


class Module(NamedTuple):
    """A module the integ-test zip lacks, assembled from its published jars."""

    dirname: str
    artifact: str
    description: str
    classnames: list[str]  # candidates: 2.x, 3.x
    extended: str  # extended.plugins
    policy: str | None  # plugin-security.policy


PAINLESS_POLICY = """grant {
  // needed to generate runtime classes
  permission java.lang.RuntimePermission "createClassLoader";

  // needed to find the classloader to load whitelisted classes from
  permission java.lang.RuntimePermission "getClassLoader";
};
"""
MODULES = [
    Module(
        "lang-painless",
        "lang-painless",
        "An easy, safe and fast scripting language for OpenSearch",
        ["org.opensearch.painless.PainlessPlugin", "org.opensearch.painless.PainlessModulePlugin"],
        "",
        PAINLESS_POLICY,
    ),
    Module(
        "analysis-common",
        "analysis-common",
        'Adds "built in" analyzers to OpenSearch.',
        [
            "org.opensearch.analysis.common.CommonAnalysisPlugin",
            "org.opensearch.analysis.common.CommonAnalysisModulePlugin",
        ],
        "lang-painless",
        None,
    ),
    Module(
        "mapper-extras",
        "mapper-extras-client",
        "Adds advanced field mappers",
        [
            "org.opensearch.index.mapper.MapperExtrasPlugin",
            "org.opensearch.index.mapper.MapperExtrasModulePlugin",
        ],
        "",
        None,
    ),
]


# ----------------------------------------------------------------------------------------------- config


def secured() -> bool:
    return flag(SECURITY_VAR, "0")


def version() -> str:
    return os.environ.get("OPENSEARCH_VERSION") or DEFAULT_VERSION


def variant() -> str:
    suffix = SECURITY_SUFFIX if secured() else ""
    if not flag("OPENSEARCH_NEURAL", DEFAULT_NEURAL):
        return "knn" + suffix
    return ("neural-ml" if flag("OPENSEARCH_ML", "0") else "neural") + suffix


CERTS_DIR = WORK / "security"  # the local CA and certificates of every secured node of the work folder


def port() -> int:
    return env_port("OPENSEARCH_PORT", "9240" if secured() else "9200")


def transport_port(http_port: int) -> int | None:
    if os.environ.get("OPENSEARCH_TRANSPORT_PORT"):
        return env_port("OPENSEARCH_TRANSPORT_PORT", "")
    return http_port + 100 if secured() else None


def is_secured(state: dict[str, object]) -> bool:
    """A running node's state says whether it is secured; otherwise the environment does."""
    return bool(state.get("secured")) if state else secured()


def url_for(p: int, state: dict[str, object] | None = None) -> str:
    return f"{'https' if is_secured(state or {}) else 'http'}://127.0.0.1:{p}"


def node_health(p: int, state: dict[str, object], run: Path, wait: str = "0s") -> str | None:
    """The health of the node on port `p`: over HTTPS as the admin user (password in `run`) if secured."""
    if is_secured(state):
        return security.node_health(url_for(p, state), CLUSTER_NAME, CERTS_DIR, run, wait)
    return process.cluster_health(url_for(p), CLUSTER_NAME, wait)


def fallback_variant(var: str) -> str:
    """k-NN only, keeping security: what `start` tries when neural-search fails."""
    return "knn" + (SECURITY_SUFFIX if var.endswith(SECURITY_SUFFIX) else "")


def plugin_zips(var: str) -> list[str]:
    """artifactIds of plugin zips, in install order."""
    out = ["opensearch-knn"]
    if var.startswith("neural-ml"):
        out = ["opensearch-job-scheduler", "opensearch-ml-plugin", *out]
    if var.startswith("neural"):
        out.append("neural-search")
    if var.endswith(SECURITY_SUFFIX):
        out.append("opensearch-security")
    return out


def home_dir(ver: str, var: str) -> Path:
    return WORK / "dist" / f"opensearch-{ver}-{var}"


def data_dir(ver: str, var: str, base: Path = WORK / "data") -> Path:
    """`base`: the data folder of the node's instance (enginelib.instances); the default node's is
    <work>/data."""
    return base / f"{ver}-{var}"


def pick_java(ver: str) -> Path:
    home = java.explicit_home("OPENSEARCH_JAVA_HOME")  # checked before `ver` is parsed
    if home:
        return home
    major_os = int(ver.split(".")[0])
    # OpenSearch 2.x runs on Java 11-21 (the security manager it needs is gone from Java 24 on);
    # OpenSearch 3.x needs Java 21+.
    return java.pick_java(
        [17, 21, 11] if major_os < 3 else [21, 25, 24, 23, 22],
        home_var="OPENSEARCH_JAVA_HOME",
        product=f"OpenSearch {ver}",
        need="17 (or 11/21)" if major_os < 3 else "21+",
        newer_from=21 if major_os >= 3 else None,
    )


# -------------------------------------------------------------------------------------------- artifacts


def artifact_list(ver: str, var: str) -> list[maven.Artifact]:
    """(group, artifact, version, type, exclusions) for the generated pom."""
    arts = [
        maven.Artifact("org.opensearch.distribution.integ-test-zip", "opensearch", ver, "zip", "*:*"),
        maven.Artifact("org.opensearch.plugin", "lang-painless", ver, "jar", "org.opensearch:*"),
        maven.Artifact("org.opensearch.plugin", "analysis-common", ver, "jar", "*:*"),
        maven.Artifact("org.opensearch.plugin", "mapper-extras-client", ver, "jar", "*:*"),
    ]
    for a in plugin_zips(var):
        arts.append(maven.Artifact("org.opensearch.plugin", a, plugin_version(a, ver), "zip", "*:*"))
    return arts


def plugin_version(artifact: str, ver: str) -> str:
    if artifact != "opensearch-security":
        return ver + ".0"
    if ver not in SECURITY_PLUGIN_VERSION:
        raise StartFail(
            f"{SECURITY_VAR}=1 runs OpenSearch {', '.join(SECURITY_PLUGIN_VERSION)} only (the security "
            f"plugin zips on Maven Central fit no other server with a k-NN zip); unset "
            f"OPENSEARCH_VERSION={ver}"
        )
    return SECURITY_PLUGIN_VERSION[ver]


def module_jars(artifact: str, ver: str) -> list[Path]:
    """The module's own jar plus its runtime dependencies that the server's lib/ does not carry."""
    return REPO.runtime_jars("org.opensearch.plugin", artifact, ver, provided_group="org.opensearch")


def needed_files(ver: str, var: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for g, a, v, t, _ in artifact_list(ver, var):
        files[a] = REPO.path(g, a, v, t)
    for mod in MODULES:
        for j in module_jars(mod.artifact, ver):
            files.setdefault(j.name, j)
    return files


def fetch(ver: str, var: str, java_home: Path) -> dict[str, Path]:
    """Make sure every artifact is in the cache and verified; returns name -> path."""
    pom = maven.pom_xml(
        ("local.opensearch", f"opensearch-{var}", ver),
        artifact_list(ver, var),
        f"generated by scripts/opensearch: the artifacts of OpenSearch {ver} ({var})",
    )
    return REPO.fetch(WORK / "build" / f"{ver}-{var}", pom, lambda: needed_files(ver, var), java_home)


# --------------------------------------------------------------------------------------------- assembly


def descriptor(name: str, description: str, ver: str, classname: str, extended: str) -> str:
    return (
        f"description={description}\n"
        f"version={ver}\n"
        f"name={name}\n"
        f"classname={classname}\n"
        f"java.version=11\n"
        f"opensearch.version={ver}\n"
        f"custom.foldername=\n"
        f"extended.plugins={extended}\n"
        f"has.native.controller=false\n"
    )


def build_module(home: Path, files: dict[str, Path], ver: str, mod: Module) -> None:
    dirname, artifact, description, classnames, extended, policy = mod
    mdir = home / "modules" / dirname
    if (mdir / "plugin-descriptor.properties").is_file():  # 3.x integ-test zips ship all modules
        log(f"module {dirname}: shipped with the server zip")
        return
    mdir.mkdir(parents=True, exist_ok=True)
    jars = module_jars(artifact, ver)
    for j in jars:
        shutil.copy2(j, mdir / j.name)
    with zipfile.ZipFile(jars[0]) as z:
        names = set(z.namelist())
    classname = next((c for c in classnames if c.replace(".", "/") + ".class" in names), None)
    if classname is None:
        raise StartFail(f"{jars[0].name}: none of {classnames} found")
    (mdir / "plugin-descriptor.properties").write_text(
        descriptor(dirname, description, ver, classname, extended)
    )
    if policy:
        (mdir / "plugin-security.policy").write_text(policy)
    log(f"module {dirname}: {', '.join(j.name for j in jars)} ({classname})")


def configure(home: Path, ver: str, var: str) -> None:
    yml = [
        "# written by scripts/opensearch",
        f"cluster.name: {CLUSTER_NAME}",
        "node.name: node-1",
        "discovery.type: single-node",
        "network.host: 127.0.0.1",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        "action.destructive_requires_name: false",
    ]
    if var.startswith("neural-ml"):
        yml += ["plugins.ml_commons.only_run_on_ml_node: false"]
    (home / "config" / "opensearch.yml").write_text("\n".join(yml) + "\n")
    jvm = home / "config" / "jvm.options"
    text = jvm.read_text()
    text = text.replace("file=logs/gc.log", f"file={LOGS}/gc.log").replace(
        "filecount=32,filesize=64m", "filecount=4,filesize=16m"
    )
    if "-XX:-UsePerfData" not in text:  # no /tmp/hsperfdata_* files
        text += "\n-XX:-UsePerfData\n"
    text = text.replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={LOGS}/").replace(
        "-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={LOGS}"
    )
    jvm.write_text(text)


def cli_env(java_home: Path, tmp: Path = TMP) -> dict[str, str]:
    """The environment for bin/opensearch and bin/opensearch-plugin (`tmp`: the node's temporary folder)."""
    env = dict(os.environ)
    env.pop("JAVA_HOME", None)
    env["OPENSEARCH_JAVA_HOME"] = str(java_home)
    env["OPENSEARCH_TMPDIR"] = str(tmp)
    env.pop("OPENSEARCH_PATH_CONF", None)
    env.pop("JAVA_TOOL_OPTIONS", None)
    env.pop("JAVA_OPTS", None)
    return env


def assemble(ver: str, var: str, java_home: Path) -> Path:
    home = home_dir(ver, var)
    marker = home / ".assembled.json"
    want = {"version": ver, "variant": var, "recipe": RECIPE}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == want:
                return home
        except ValueError:
            pass
    t0 = time.monotonic()
    for d in (LOGS, TMP, RUN):
        d.mkdir(parents=True, exist_ok=True)
    log(f"assembling OpenSearch {ver} ({var}) in {home}")
    files = fetch(ver, var, java_home)
    tmp = home.with_name(home.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    maven.extract(files["opensearch"], tmp)
    for mod in MODULES:
        build_module(tmp, files, ver, mod)
    configure(tmp, ver, var)
    env = cli_env(java_home)
    env["OPENSEARCH_JAVA_OPTS"] = f"-Xmx512m -XX:-UsePerfData -Djava.io.tmpdir={TMP}"
    for art in plugin_zips(var):
        z = files[art]
        if art == "opensearch-security":
            z = security.plugin_for_server(z, ver, WORK / "build" / f"{ver}-{var}")
        log(f"installing plugin {z.name}")
        cmd = [str(tmp / "bin" / "opensearch-plugin"), "install", "--batch", z.as_uri()]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=tmp)
        if r.returncode != 0:
            raise StartFail(
                f"plugin install failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}"
            )
    r = subprocess.run(
        [str(tmp / "bin" / "opensearch-plugin"), "list"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp,
    )
    log("installed plugins: " + " ".join(r.stdout.split()))
    (tmp / ".assembled.json").write_text(json.dumps(want))
    if home.exists():
        shutil.rmtree(home)
    tmp.rename(home)
    log(f"assembled in {time.monotonic() - t0:.1f}s")
    return home
