"""Artifacts from Maven Central, fetched with `mvn` (the ordinary client) into a private local repository.

The local repository (e.g. .work/opensearch/cache) is the download cache: `~/.m2` is not touched. Maven keeps
the checksum files Maven Central publishes beside each file; `Repo.verify` checks them, and checks artifacts
for which Maven Central publishes none against SHA-256 values pinned by the engine's module. If everything
is already in the cache and verifies, mvn is not run at all, so a rebuild works offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import Fail, StartFail, flag, log

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class Corrupt(Exception):
    pass


class Artifact(NamedTuple):
    """One dependency of the generated pom; `exclusions` is "group:artifact" ("*:*": none of its own)."""

    group: str
    artifact: str
    version: str
    type: str
    exclusions: str


def pom_xml(project: tuple[str, str, str], artifacts: list[Artifact], comment: str) -> str:
    """A pom whose only purpose is to list `artifacts` for maven-dependency-plugin:resolve."""
    deps = []
    for g, a, v, t, excl in artifacts:
        eg, ea = excl.split(":")
        deps.append(f"""    <dependency>
      <groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version><type>{t}</type>
      <exclusions><exclusion><groupId>{eg}</groupId><artifactId>{ea}</artifactId></exclusion></exclusions>
    </dependency>""")
    group, artifact, ver = project
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- {comment} -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>{group}</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{ver}</version>
  <packaging>pom</packaging>
  <dependencies>
{chr(10).join(deps)}
  </dependencies>
</project>
"""


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Repo:
    """A Maven local repository used as the download cache, and how its files are trusted."""

    cache: Path
    tmp: Path  # mvn's java.io.tmpdir
    # SHA-256 by file name, for artifacts for which Maven Central publishes no checksum file
    pinned_sha256: Mapping[str, str]
    # environment variable: 1 accepts artifacts with neither a published nor a pinned checksum
    allow_unverified_var: str

    def path(self, group: str, artifact: str, ver: str, ext: str) -> Path:
        return self.cache / group.replace(".", "/") / artifact / ver / f"{artifact}-{ver}.{ext}"

    def run_mvn(self, pomdir: Path, java_home: Path) -> None:
        mvn = shutil.which("mvn")
        if not mvn:
            raise Fail(
                "mvn (Apache Maven) is not on PATH: it fetches the artifacts from Maven Central "
                "(apt-get install maven)"
            )
        env = dict(os.environ)
        env["JAVA_HOME"] = str(java_home)
        env["MAVEN_OPTS"] = f"-XX:-UsePerfData -Djava.io.tmpdir={self.tmp}"
        cmd = [
            mvn,
            "-B",
            "-ntp",
            "-U",
            f"-Dmaven.repo.local={self.cache}",
            "-f",
            str(pomdir / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:resolve",
        ]
        logfile = pomdir / "mvn.log"
        log(f"fetching artifacts with mvn into {self.cache} (log: {logfile})")
        with open(logfile, "w") as fh:
            rc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            ).returncode
        if rc != 0:
            tail = logfile.read_text(errors="replace").splitlines()[-40:]
            raise StartFail(f"mvn failed (exit {rc}): {' '.join(cmd)}\n" + "\n".join(tail))

    def verify(self, path: Path) -> str:
        """Check one downloaded artifact; returns what it was checked against. Raises Corrupt."""
        if not path.is_file():
            raise Corrupt(f"{path.name}: missing")
        checked = []
        for ext, algo in ((".sha512", "sha512"), (".sha256", "sha256"), (".sha1", "sha1"), (".md5", "md5")):
            side = path.with_name(path.name + ext)
            if side.is_file():
                words = side.read_text(errors="replace").split()
                if not words:
                    raise Corrupt(f"{side.name}: empty checksum file")
                want = words[0].lower()
                got = file_digest(path, algo)
                if got != want:
                    raise Corrupt(f"{path.name}: {algo} {got} != published {want}")
                checked.append(f"published {algo}")
        pinned = self.pinned_sha256.get(path.name)
        if pinned:
            got = file_digest(path, "sha256")
            if got != pinned:
                raise Corrupt(f"{path.name}: sha256 {got} != pinned {pinned}")
            checked.append("pinned sha256")
        if path.suffix in (".zip", ".jar"):
            try:
                with zipfile.ZipFile(path) as z:
                    bad = z.testzip()
            except zipfile.BadZipFile as e:
                raise Corrupt(f"{path.name}: not a valid zip ({e})") from e
            if bad:
                raise Corrupt(f"{path.name}: CRC error in {bad}")
        if not checked:
            if flag(self.allow_unverified_var, "0"):
                log(
                    f"WARNING: {path.name}: no published or pinned checksum; "
                    f"accepted ({self.allow_unverified_var}=1)"
                )
                return "zip integrity only"
            raise StartFail(
                f"{path.name}: Maven Central publishes no checksum for it and this script pins none for it; "
                f"set {self.allow_unverified_var}=1 to accept it after a zip integrity check"
            )
        return ", ".join(checked)

    def pom_deps(self, group: str, artifact: str, ver: str) -> list[tuple[str, str, str, set[str]]]:
        """The compile/runtime, non-optional dependencies in an artifact's pom, with their exclusions."""
        pom = self.path(group, artifact, ver, "pom")
        if not pom.is_file():
            raise Corrupt(f"{pom.name}: missing")
        ns = POM_NS
        root = ET.parse(pom).getroot()
        out = []
        for d in root.findall("m:dependencies/m:dependency", ns):
            g = d.findtext("m:groupId", "", ns).strip()
            a = d.findtext("m:artifactId", "", ns).strip()
            v = d.findtext("m:version", "", ns).strip()
            scope = d.findtext("m:scope", "compile", ns).strip()
            optional = d.findtext("m:optional", "false", ns).strip()
            if scope not in ("compile", "runtime") or optional == "true":
                continue
            excl = {
                f"{e.findtext('m:groupId', '', ns)}:{e.findtext('m:artifactId', '', ns)}"
                for e in d.findall("m:exclusions/m:exclusion", ns)
            }
            out.append((g, a, v, excl))
        return out

    def runtime_jars(self, group: str, artifact: str, ver: str, provided_group: str) -> list[Path]:
        """The artifact's own jar plus its runtime dependencies, walked through the poms in the cache.

        Dependencies in `provided_group` (the server and its libraries, which the server's lib/ carries) are
        left out."""
        jars: list[Path] = []
        seen: set[str] = set()

        def walk(g: str, a: str, v: str, excl: set[str]) -> None:
            key = f"{g}:{a}"
            if key in seen:
                return
            seen.add(key)
            if "${" in v:
                raise Fail(f"cannot resolve version {v} of {key} from its pom")
            jars.append(self.path(g, a, v, "jar"))
            if "*:*" in excl:
                return
            for dg, da, dv, dexcl in self.pom_deps(g, a, v):
                if dg == provided_group:
                    continue
                if f"{dg}:{da}" in excl or f"{dg}:*" in excl:
                    continue
                walk(dg, da, dv, dexcl | excl)

        walk(group, artifact, ver, set())
        return jars

    def fetch(
        self, pomdir: Path, pom: str, needed: Callable[[], dict[str, Path]], java_home: Path
    ) -> dict[str, Path]:
        """Make sure every artifact is in the cache and verified; returns name -> path.

        `needed` lists the files (it may read poms in the cache, so it is called again after mvn ran);
        `pom` is written to `pomdir` and resolved with mvn only if something is missing or bad."""
        try:  # everything already in the cache: no need to run mvn (works offline)
            files = needed()
            for p in sorted(set(files.values())):
                self.verify(p)
            log(f"all artifacts found in {self.cache} and verified")
            return files
        except (Corrupt, Fail, OSError, ET.ParseError):
            pass
        for attempt in (1, 2):
            pomdir.mkdir(parents=True, exist_ok=True)
            (pomdir / "pom.xml").write_text(pom)
            self.run_mvn(pomdir, java_home)
            try:
                files = needed()
            except (Corrupt, ET.ParseError) as e:
                raise StartFail(f"after mvn: {e}") from e
            bad = []
            for p in sorted(set(files.values())):
                try:
                    how = self.verify(p)
                    log(f"verified {p.name} ({how})")
                except Corrupt as e:
                    bad.append((p, str(e)))
            if not bad:
                return files
            for p, why in bad:
                log(f"bad download: {why}; removing it from the cache")
                if p.parent.is_dir():
                    for f in p.parent.iterdir():
                        if (
                            f.name.startswith(p.name)
                            or f.name == "_remote.repositories"
                            or f.name.endswith(".lastUpdated")
                        ):
                            f.unlink()
            if attempt == 2:
                raise StartFail("downloads failed verification twice: " + "; ".join(why for _, why in bad))
        raise AssertionError("unreachable")


def extract(zpath: Path, dest: Path, strip_top: bool = True) -> None:
    """Unpack a zip (e.g. a server distribution) into `dest`, keeping file modes; refuses paths outside it."""
    with zipfile.ZipFile(zpath) as z:
        for info in z.infolist():
            name = info.filename
            if strip_top:
                name = name.split("/", 1)[1] if "/" in name else ""
            if not name:
                continue
            target = dest / name
            if not str(target.resolve()).startswith(str(dest.resolve())):
                raise Fail(f"{zpath.name}: unsafe path {info.filename}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)
