"""TLS and HTTP basic authentication for a local OpenSearch node (scripts/opensearch, OPENSEARCH_SECURITY=1).

- Certificates: a local CA, a node certificate (CN node-1, SAN DNS:localhost and IP:127.0.0.1, for HTTP and
  transport) and an admin client certificate (for the plugin's securityadmin tool), made once with `openssl`
  under <work>/security/ and reused by every secured node of the work folder. Private keys are 0600.
- The admin password: OPENSEARCH_INITIAL_ADMIN_PASSWORD, or one generated here; kept in the node's run folder
  in a 0600 file (status, stop and the tests read it there) and never printed or logged. Its bcrypt hash is
  made by the security plugin's own tools/hash.sh, which reads the password from an environment variable, so
  it never appears on a command line.
- The node runs from its own copy of the configuration: the certificates, the TLS settings and an
  internal_users.yml holding only the admin user (backend role `admin`, which the plugin's default
  roles_mapping.yml maps to `all_access`). The security index is created from it at the first start
  (plugins.security.allow_default_init_securityindex).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import NamedTuple

from . import Fail, StartFail, log

ADMIN_USER = "admin"
PASSWORD_VAR = "OPENSEARCH_INITIAL_ADMIN_PASSWORD"
PASSWORD_FILE = "admin-password"  # in the node's run folder
HASH_FILE = "admin-password.bcrypt"
CONFIG_TLS = "tls"  # folder of the node's configuration copy holding its certificate, key and the CA
SUBJECT = "/O=hybrid-rerank/OU=local test"
DAYS = "3650"


class Certs(NamedTuple):
    folder: Path
    ca: Path
    node: Path
    node_key: Path
    admin: Path
    admin_key: Path


class Secrets(NamedTuple):
    password_file: Path
    password: str
    bcrypt: str


def openssl(*args: str, cwd: Path) -> str:
    exe = shutil.which("openssl")
    if not exe:
        raise Fail("openssl is not on PATH: it makes the local CA and certificates (apt-get install openssl)")
    r = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise StartFail(f"openssl {' '.join(args)} failed (exit {r.returncode}): {r.stderr.strip()}")
    return r.stdout


def subject_dn(cert: Path) -> str:
    """The certificate's subject as the security plugin compares it (RFC 2253, e.g. CN=node-1,OU=...)."""
    out = openssl("x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "RFC2253", cwd=cert.parent)
    return out.strip().removeprefix("subject=").strip()


def ensure_certs(folder: Path) -> Certs:
    """The local CA and the node and admin certificates, made once (keys 0600, PKCS#8 as the plugin wants)."""
    certs = Certs(
        folder,
        folder / "root-ca.pem",
        folder / "node.pem",
        folder / "node-key.pem",
        folder / "admin.pem",
        folder / "admin-key.pem",
    )
    if all(p.is_file() for p in certs[1:]):
        return certs
    log(f"making a local CA and node/admin certificates with openssl in {folder}")
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, mode=0o700)
    key = ("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out")
    openssl(*key, "root-ca-key.pem", cwd=tmp)
    openssl(
        *("req", "-new", "-x509", "-sha256", "-key", "root-ca-key.pem", "-days", DAYS, "-out", "root-ca.pem"),
        *("-subj", f"{SUBJECT}/CN=hybrid-rerank local CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=tmp,
    )
    for name, cn, san in (("node", "node-1", "DNS:localhost,IP:127.0.0.1"), ("admin", "admin", "")):
        (tmp / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
            + (f"subjectAltName={san}\n" if san else "")
        )
        openssl(*key, f"{name}-key.pem", cwd=tmp)
        openssl(
            *("req", "-new", "-key", f"{name}-key.pem", "-subj", f"{SUBJECT}/CN={cn}", "-out", f"{name}.csr"),
            cwd=tmp,
        )
        openssl(
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "root-ca.pem", "-CAkey", "root-ca-key.pem"),
            *("-CAcreateserial", "-sha256", "-days", DAYS, "-extfile", f"{name}.ext", "-out", f"{name}.pem"),
            cwd=tmp,
        )
    for f in tmp.iterdir():
        if f.suffix in (".csr", ".ext", ".srl"):
            f.unlink()
        else:
            f.chmod(0o600 if f.name.endswith("-key.pem") else 0o644)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    folder.chmod(0o755)
    return certs


def plugin_for_server(plugin_zip: Path, server_version: str, build: Path) -> Path:
    """The security plugin zip, with its descriptor's opensearch.version set to the server's when they differ
    (2.19.4.0 on a 2.19.6 server: see SECURITY_PLUGIN_VERSION in enginelib.opensearch)."""
    with zipfile.ZipFile(plugin_zip) as z:
        descriptor = z.read("plugin-descriptor.properties").decode()
    lines = descriptor.splitlines()
    built_for = next((ln.split("=", 1)[1] for ln in lines if ln.startswith("opensearch.version=")), "")
    if built_for == server_version:
        return plugin_zip
    log(
        f"WARNING: {plugin_zip.name} was built for OpenSearch {built_for}; installing it on {server_version} "
        f"with its descriptor's opensearch.version rewritten (Maven Central has no zip for {server_version})"
    )
    out = build / f"{plugin_zip.stem}-for-{server_version}.zip"
    build.mkdir(parents=True, exist_ok=True)
    fixed = "\n".join(
        f"opensearch.version={server_version}" if ln.startswith("opensearch.version=") else ln for ln in lines
    )
    with zipfile.ZipFile(plugin_zip) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "plugin-descriptor.properties":
                data = (fixed + "\n").encode()
            dst.writestr(info, data)
    return out


def read_password(run: Path) -> str | None:
    try:
        return (run / PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def bcrypt_hash(home: Path, java_home: Path, password: str) -> str:
    """The plugin's tools/hash.sh, reading the password from an environment variable (not argv)."""
    tool = home / "plugins" / "opensearch-security" / "tools" / "hash.sh"
    var = "HYBRID_RERANK_HASH_INPUT"
    env = {"PATH": os.environ.get("PATH", ""), "OPENSEARCH_JAVA_HOME": str(java_home), var: password}
    r = subprocess.run(
        ["bash", str(tool), "-env", var], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    hashed = next((ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("$2")), None)
    if r.returncode != 0 or hashed is None:
        raise StartFail(f"{tool.name} failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
    return hashed


def node_secrets(run: Path, home: Path, java_home: Path, data_initialised: bool) -> Secrets:
    """The admin password (the environment's, else the one kept in `run`, else a new one) and its hash.

    The security index keeps the hash it was initialised with, so a different password for a node whose
    data already exists is refused (`start --fresh` wipes the data and re-initialises)."""
    kept = read_password(run)
    given = os.environ.get(PASSWORD_VAR) or None
    if given and kept and given != kept and data_initialised:
        raise Fail(
            f"{PASSWORD_VAR} differs from the password this node's security index was initialised with "
            f"(kept in {run / PASSWORD_FILE}); unset it, or run `start --fresh` to wipe the node's data"
        )
    password = given or kept or secrets.token_urlsafe(24)
    run.mkdir(parents=True, exist_ok=True)
    hash_file = run / HASH_FILE
    hashed = hash_file.read_text().strip() if password == kept and hash_file.is_file() else ""
    if not hashed:
        hashed = bcrypt_hash(home, java_home, password)
        write_private(hash_file, hashed + "\n")
    if password != kept:
        write_private(run / PASSWORD_FILE, password + "\n")
        how = f"from {PASSWORD_VAR}" if given else "generated"
        log(f"admin password ({how}) written to {run / PASSWORD_FILE} (mode 0600)")
    return Secrets(run / PASSWORD_FILE, password, hashed)


def prepare(certs_dir: Path, run: Path, home: Path, java_home: Path, data: Path) -> tuple[Certs, Secrets]:
    """The certificates and the node's admin password and hash, before its data folder is made."""
    initialised = data.is_dir() and any(data.iterdir())
    return ensure_certs(certs_dir), node_secrets(run, home, java_home, initialised)


def settings(certs: Certs) -> str:
    """opensearch.yml lines: TLS on HTTP and transport, the admin and node DNs, index initialisation."""
    node = f"{CONFIG_TLS}/{certs.node.name}"
    key = f"{CONFIG_TLS}/{certs.node_key.name}"
    ca = f"{CONFIG_TLS}/{certs.ca.name}"
    lines = []
    for layer in ("transport", "http"):
        lines += [
            f"plugins.security.ssl.{layer}.pemcert_filepath: {node}",
            f"plugins.security.ssl.{layer}.pemkey_filepath: {key}",
            f"plugins.security.ssl.{layer}.pemtrustedcas_filepath: {ca}",
        ]
    lines += [
        "plugins.security.ssl.transport.enforce_hostname_verification: false",
        "plugins.security.ssl.http.enabled: true",
        "plugins.security.allow_default_init_securityindex: true",
        f"plugins.security.authcz.admin_dn: [{json.dumps(subject_dn(certs.admin))}]",
        f"plugins.security.nodes_dn: [{json.dumps(subject_dn(certs.node))}]",
        'plugins.security.restapi.roles_enabled: ["all_access"]',
        "plugins.security.system_indices.enabled: true",
        "plugins.security.audit.type: noop",  # no audit sink configured (it would log an error at start)
    ]
    return "\n".join(lines)


def install(config: Path, certs: Certs, node_secrets: Secrets) -> None:
    """Put the certificates and the admin user into a node's configuration copy."""
    tls = config / CONFIG_TLS
    tls.mkdir(exist_ok=True)
    for src in (certs.ca, certs.node, certs.node_key):
        shutil.copy2(src, tls / src.name)
    (tls / certs.node_key.name).chmod(0o600)
    users = config / "opensearch-security" / "internal_users.yml"
    users.write_text(
        "# written by scripts/opensearch (OPENSEARCH_SECURITY=1): the admin user only\n"
        "---\n"
        '_meta:\n  type: "internalusers"\n  config_version: 2\n'
        f"{ADMIN_USER}:\n"
        f"  hash: {json.dumps(node_secrets.bcrypt)}\n"
        "  reserved: true\n"
        '  backend_roles:\n  - "admin"\n'
        '  description: "hybrid-rerank local admin (scripts/opensearch)"\n'
    )
    for dirpath, _dirnames, filenames in os.walk(config):  # what the plugin checks (it warns otherwise)
        os.chmod(dirpath, 0o700)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o600)


def describe(certs_dir: Path, run: Path) -> str:
    """Where a client finds the CA and the admin password (never the password itself)."""
    return f" ca={certs_dir / 'root-ca.pem'} password_file={run / PASSWORD_FILE}"


def node_health(url: str, cluster_name: str, certs_dir: Path, run: Path, wait: str = "0s") -> str | None:
    return cluster_health(url, cluster_name, certs_dir / "root-ca.pem", read_password(run), wait)


def explain_refusal(run: Path) -> bool:
    """After a failed wait for health: say so when the node refused the admin password. Returns False."""
    if last_status == 401:
        log(f"the node refuses the admin password kept in {run / PASSWORD_FILE} (HTTP 401)")
    return False


last_status = 0  # the HTTP status of the last health call (401: the password is refused)


def cluster_health(
    base_url: str, cluster_name: str, ca: Path, password: str | None, wait: str = "0s"
) -> str | None:
    """green/yellow/red from `_cluster/health` over HTTPS, verified against `ca`, as the admin user; None if
    nothing answers, the answer is an error (e.g. 503 while the security index is being initialised) or it
    comes from another cluster."""
    global last_status
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError):
        return None
    token = base64.b64encode(f"{ADMIN_USER}:{password or ''}".encode()).decode()
    request = urllib.request.Request(
        f"{base_url}/_cluster/health?wait_for_status=yellow&timeout={wait}",
        headers={"Authorization": f"Basic {token}"},
    )
    timeout = 10 + (int(wait[:-1]) if wait.endswith("s") else 0)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            last_status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        last_status = e.code
        return None
    except (urllib.error.URLError, OSError, ValueError):
        last_status = 0
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("cluster_name") == cluster_name:
        status = parsed.get("status")
        return status if isinstance(status, str) else None
    return None
