"""deploy/ without Docker or Kubernetes: the files parse, name files that exist, and agree with each other.

Docker cannot run here, so the compose file, Dockerfile and Kubernetes manifests are checked as data:
every local path they reference exists, services and ports match the `bus` commands they run, and
the Grafana pieces point at each other (datasource uid, provisioning paths, dashboard folder).
The PromQL itself is checked against a live Prometheus in test_deploy_prometheus.py.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import yaml

from bus.local.redisproc import free_port
from bus.store.keys import REGISTRY, WORKERS, dlq_key, stream_key, target_key
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "busway.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "busway.yml"
K8S = DEPLOY / "k8s"


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE_FILE)


def services(compose) -> dict:
    return compose["services"]


def command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def mounts(service: dict) -> list[tuple[Path, str]]:
    """Bind mounts of a service as (host path, container path); named volumes are skipped."""
    out = []
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((COMPOSE_FILE.parent / source).resolve(), target))
    return out


def mount_source(service: dict, container_path: str) -> Path:
    """The host path that provides container_path (a mount of it or of a parent directory)."""
    for host, target in mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return host / container_path[len(target):].lstrip("/")
    raise AssertionError(f"nothing mounted at {container_path}")


# --- docker compose -------------------------------------------------------------------------

def test_compose_has_the_whole_stack(compose):
    assert set(services(compose)) >= {"redis", "broker", "worker", "prometheus", "grafana", "redis_exporter"}


def test_compose_local_paths_exist(compose):
    for name, service in services(compose).items():
        build = service.get("build")
        if build:
            context = (COMPOSE_FILE.parent / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile"
        for host, _ in mounts(service):
            assert host.exists(), f"{name}: mounted {host} does not exist"


def test_compose_redis_keeps_an_append_only_file(compose):
    argv = command(services(compose)["redis"])
    assert option(argv, "--appendonly") == "yes"
    assert option(argv, "--appendfsync") in {"always", "everysec"}


def test_compose_broker_and_worker_run_bus_with_the_mounted_rules_and_functions(compose):
    svc = services(compose)
    broker, worker = command(svc["broker"]), command(svc["worker"])
    assert broker[:2] == ["bus", "serve"] and worker[:2] == ["bus", "worker"]
    assert mount_source(svc["broker"], option(broker, "--rules")) == ROOT / "rules"
    assert mount_source(svc["worker"], option(worker, "--functions")) == ROOT / "workers"
    # Both listen on the container's address: the broker for clients, the worker's /metrics for Prometheus.
    assert option(broker, "--host") == "0.0.0.0" and option(worker, "--metrics-host") == "0.0.0.0"
    for name in ("broker", "worker"):
        url = svc[name]["environment"]["BUS_REDIS_URL"]
        assert url.split("//")[1].split(":")[0] == "redis", f"{name} must use the redis service"
    # Scaled workers cannot share a host port: they are found by DNS instead.
    assert "ports" not in svc["worker"]
    published = {p.split(":")[-1] for p in svc["broker"].get("ports", [])}
    assert option(broker, "--port") in published


def test_compose_ports_match_prometheus_scrape_config(compose):
    svc = services(compose)
    config_arg = next(a for a in command(svc["prometheus"]) if a.startswith("--config.file="))
    config_file = mount_source(svc["prometheus"], config_arg.split("=", 1)[1])
    assert config_file == DEPLOY / "prometheus" / "prometheus.yml"
    prom_dir, config = config_file.parent, load(config_file)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    def dns(job: str) -> dict:
        (sd,) = jobs[job]["dns_sd_configs"]
        return sd

    assert dns("busway-broker")["names"] == ["broker"]
    assert dns("busway-broker")["port"] == int(option(command(svc["broker"]), "--port"))
    assert dns("busway-worker")["names"] == ["worker"] and dns("busway-worker")["type"] == "A"
    assert dns("busway-worker")["port"] == int(option(command(svc["worker"]), "--metrics-port"))
    (exporter,) = jobs["redis"]["static_configs"][0]["targets"]
    assert exporter.split(":")[0] in svc, "redis job must scrape the redis_exporter service"
    for rule_file in config["rule_files"]:
        assert (prom_dir / rule_file).is_file(), rule_file


def test_compose_redis_exporter_checks_busway_streams(compose):
    env = services(compose)["redis_exporter"]["environment"]
    assert env["REDIS_ADDR"].startswith("redis://redis:")
    patterns = env["REDIS_EXPORTER_CHECK_STREAMS"].split(",")
    # Target queues and DLQs, and not the registry hash or the heartbeat sorted set.
    assert any(fnmatch.fnmatchcase(stream_key("default/r/t"), p) for p in patterns)
    assert any(fnmatch.fnmatchcase(dlq_key("default/r/t"), p) for p in patterns)
    assert not any(fnmatch.fnmatchcase(k, p) for p in patterns for k in (REGISTRY, WORKERS))


def test_compose_grafana_provisioning_is_mounted(compose):
    grafana = services(compose)["grafana"]
    assert mount_source(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml") == DATASOURCES
    assert mount_source(grafana, "/etc/grafana/provisioning/dashboards/busway.yml") == PROVIDERS
    (provider,) = load(PROVIDERS)["providers"]
    dashboards_dir = mount_source(grafana, provider["options"]["path"])
    assert (dashboards_dir / "busway.json") == DASHBOARD
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mount_source(grafana, home) == DASHBOARD


def test_grafana_datasource_points_at_the_prometheus_service(compose):
    (ds,) = load(DATASOURCES)["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"]
    host, port = ds["url"].split("//")[1].split(":")
    assert host in services(compose) and host == "prometheus"
    assert f"{port}:{port}" in services(compose)["prometheus"]["ports"]
    scrape = load(DEPLOY / "prometheus" / "prometheus.yml")["global"]["scrape_interval"]
    assert ds["jsonData"]["timeInterval"] == scrape, "Grafana's $__rate_interval is sized from this"


# --- Grafana dashboard ----------------------------------------------------------------------

def test_dashboard_json_is_generated_from_dashboard_py():
    result = subprocess.run([sys.executable, str(DEPLOY / "grafana" / "dashboard.py"), "--check"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_dashboard_panels_use_the_provisioned_datasource_uid():
    text = DASHBOARD.read_text()
    assert "${DS_" not in text and "__inputs" not in text
    uid = load(DATASOURCES)["datasources"][0]["uid"]
    dashboard = json.loads(text)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid and t["expr"].strip(), p["title"]
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] == uid


def test_dashboard_covers_the_issue_list():
    titles = " | ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for words in ["ingested", "matches / s per rule", "invocations / s per target", "errors / s per target",
                  "throttles", "latency", "queue depth", "oldest queued event age", "dlq depth",
                  "schedule lateness", "concurrent executions"]:
        assert words in titles, words


def test_dashboard_panels_do_not_overlap():
    cells = set()
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


# --- Dockerfile -----------------------------------------------------------------------------

def dockerignored(rel: str) -> bool:
    """Docker's rule: the last matching .dockerignore line wins; `!` re-includes."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_dockerfile_copies_files_that_exist_and_are_in_the_build_context():
    copies = [line.split()[1:] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY") and "--from=" not in line]
    assert copies
    for args in copies:
        for src in args[:-1]:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: no such file"
            files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
            for f in files:
                assert not dockerignored(str(f.relative_to(ROOT))), f"{f} is excluded by .dockerignore"
    for junk in (".venv/bin/python", ".busway/redis.url", ".git/HEAD", "tests/conftest.py", "bus/__pycache__/x.pyc"):
        assert dockerignored(junk), junk


def test_dockerfile_default_command_and_ports_match_compose(compose):
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert cmd == command(services(compose)["broker"])
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())
    assert {"8080", "9101"} <= exposed
    assert re.search(r"^USER \w+", text, re.M), "run as a non-root user"


def test_docker_context_is_enough_to_build_busway(tmp_path):
    """What the Dockerfile's build stage copies (its COPY lines, less .dockerignore) makes a
    complete package, and building it makes the compiled pattern engine wherever this machine
    can compile it, as the build stage (with build-essential) can."""
    pytest.importorskip("setuptools", reason="setuptools builds the package here")
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    build_stage = lines[stages[0]:stages[1]]
    copies = [line.split()[1:] for line in build_stage if line.startswith("COPY") and "--from=" not in line]
    assert copies
    for args in copies:
        destination = tmp_path / args[-1]
        for src in args[:-1]:
            path = ROOT / src
            files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
            for f in files:
                rel = f.relative_to(ROOT)
                if dockerignored(str(rel)):
                    continue
                target = destination / f.name if path.is_file() else destination / f.relative_to(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)
    for stale in tmp_path.rglob("*.so"):  # a build of this checkout is not what the image builds
        stale.unlink()
    build = "import setuptools.build_meta as b; print(b.build_sdist('dist'))"
    result = subprocess.run([sys.executable, "-c", build], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sdist = tmp_path / "dist" / result.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"bus/cli.py", "bus/worker/loop.py", "bus/broker/app.py", "setup.py", "bus/patterns/_cengine.c"} <= names
    # What `pip wheel .` puts in the wheel is what `build` makes (bdist_wheel packs build/lib;
    # the wheel package it needs is not always installed where the tests run).
    result = subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-base", "build"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    engines = list((tmp_path / "build").glob("lib*/bus/patterns/_cengine*.so"))
    # What setup.py asks before it makes the compiled engine required: a C compiler and Python.h.
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not (cc and shutil.which(cc[0]) and (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()):
        pytest.skip("no C compiler and Python.h here: the build is pure Python (the image has both)")
    assert engines, "the build lacks bus/patterns/_cengine: the image would match patterns in pure Python"


# --- Kubernetes -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    kustomization = load(K8S / "kustomization.yaml")
    objects = {}
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), f"kustomization names {name}, which does not exist"
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= set(doc), name
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    listed = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == set(kustomization["resources"]), "every manifest is in kustomization.yaml"
    return objects


def test_k8s_has_the_pieces(k8s):
    kinds = {kind for kind, _ in k8s}
    assert {"Deployment", "Service", "ConfigMap", "ScaledObject"} <= kinds
    assert ("Deployment", "busway-broker") in k8s and ("Deployment", "busway-worker") in k8s


def test_k8s_selectors_match_pod_labels(k8s):
    for (kind, name), obj in k8s.items():
        if kind == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), name
    service = k8s[("Service", "busway-broker")]
    broker_pod = k8s[("Deployment", "busway-broker")]["spec"]["template"]
    assert service["spec"]["selector"].items() <= broker_pod["metadata"]["labels"].items()
    worker_labels = k8s[("Deployment", "busway-worker")]["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items(), "the Service must not pick workers"
    port_names = {p["name"] for c in broker_pod["spec"]["containers"] for p in c["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_k8s_references_exist(k8s):
    """ConfigMaps, volumes and probe ports named in the Deployments are defined."""
    for (kind, name), obj in k8s.items():
        if kind != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in k8s, f"{name}: volume {v['name']}"
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                assert ("ConfigMap", ref["configMapRef"]["name"]) in k8s, name
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}: mount {m['name']}"
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                for how in ("httpGet", "tcpSocket"):
                    port = c.get(probe, {}).get(how, {}).get("port")
                    if port is not None:
                        assert port in ports or port in ports.values(), f"{name}: {probe} port {port}"


def test_k8s_commands_match_ports_and_annotations(k8s):
    for name, flag in (("busway-broker", "--port"), ("busway-worker", "--metrics-port")):
        template = k8s[("Deployment", name)]["spec"]["template"]
        (container,) = template["spec"]["containers"]
        port = option(container["args"], flag)
        assert int(port) in {p["containerPort"] for p in container["ports"]}, name
        assert template["metadata"]["annotations"]["prometheus.io/port"] == port, name
        assert option(container["args"], "--host" if name == "busway-broker" else "--metrics-host") == "0.0.0.0"
    (broker,) = k8s[("Deployment", "busway-broker")]["spec"]["template"]["spec"]["containers"]
    rules_mount = option(broker["args"], "--rules")
    assert rules_mount in {m["mountPath"] for m in broker["volumeMounts"]}


def test_k8s_rules_configmap_is_valid_and_its_functions_are_in_the_image(k8s, tmp_path):
    data = k8s[("ConfigMap", "busway-rules")]["data"]
    for filename, text in data.items():
        (tmp_path / filename).write_text(text)
    result = subprocess.run([sys.executable, "-m", "bus", "validate", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for ref in functions_in(data):
        module = ref.split(".")[0]
        assert (ROOT / "workers" / f"{module}.py").is_file(), f"{ref}: not in workers/ (baked into the image)"


def functions_in(data: dict) -> set[str]:
    return {t["function"] for text in data.values() for r in (yaml.safe_load(text).get("rules") or [])
            for t in r.get("targets", []) if "function" in t}


def target_streams(data: dict) -> set[str]:
    out = set()
    for text in data.values():
        for rule in yaml.safe_load(text).get("rules") or []:
            for t in rule.get("targets", []):
                out.add(stream_key(target_key(rule.get('bus', 'default'), rule['name'], t['id'])))
    return out


def test_k8s_rules_follow_the_repository_rules():
    """rules.yaml and scaledobject.yaml are generated from rules/: a stale copy ships rules (and KEDA
    triggers) the repository no longer has. After changing rules/, run deploy/k8s/from_rules.py."""
    result = subprocess.run([sys.executable, str(K8S / "from_rules.py"), "--check"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr.strip()


def test_keda_scales_the_worker_on_every_target_stream(k8s):
    (scaled,) = [obj for (kind, _), obj in k8s.items() if kind == "ScaledObject"]
    assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in k8s
    assert scaled["spec"]["scaleTargetRef"]["name"] == "busway-worker"
    redis_url = k8s[("ConfigMap", "busway-env")]["data"]["BUS_REDIS_URL"]
    host_port, db = redis_url.split("//")[1].split("/")
    streams = set()
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert meta["consumerGroup"] == "busway" and meta["address"] == host_port
        assert meta["databaseIndex"] == db
        assert "lagCount" in meta or "streamLength" in meta or "pendingEntriesCount" in meta
        streams.add(meta["stream"])
    assert streams == target_streams(k8s[("ConfigMap", "busway-rules")]["data"])


# --- what the containers need from `bus worker` ---------------------------------------------

def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) with a socket listening on `port`."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                out.add(address)
    return out


def test_worker_metrics_listen_beyond_loopback_as_compose_runs_them(compose, redis_url):
    """Prometheus scrapes each worker container on its own IP, so /metrics must not be loopback-only."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to see the listening address")
    argv = command(services(compose)["worker"])
    host = option(argv, "--metrics-host")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bus", "worker", "--functions", str(ROOT / "workers"),
                             "--metrics-host", host, "--metrics-port", str(port), "--redis", redis_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        addresses = wait_for(lambda: listening_addresses(port), timeout=15, what="worker metrics port")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert addresses & {"00000000", "00000000000000000000000000000000"}, f"listening on {addresses} (hex)"
