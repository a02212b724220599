"""The Kubernetes manifests (deploy/kustomization.yaml, deploy/k8s/) against docker-compose.yml:
the same images, commands, ports, settings and mount paths, and a KEDA trigger on the real queue.

No cluster is needed: the files are parsed and compared.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from redis import Redis
from rq import Queue

from app.settings import Settings
from tests.test_compose import mounts

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DEFAULTED = re.compile(r"\$\{\w+:-(.*)\}")


def compose_value(value: object) -> str:
    """A compose setting as it is without an .env: `${VAR:-default}` is its default."""
    text = str(value)
    match = DEFAULTED.fullmatch(text)
    return match.group(1) if match else text


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def objects(kustomization: dict) -> dict[tuple[str, str], dict]:
    """(kind, name) -> object, over every resource file the kustomization lists."""
    out = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / resource).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def containers_of(objects: dict, kind: str, name: str) -> list[dict]:
    """A workload's containers, init containers too."""
    pod = objects[(kind, name)]["spec"]["template"]["spec"]
    return pod["containers"] + pod.get("initContainers", [])


def container(objects: dict, kind: str, name: str, container: str | None = None) -> dict:
    """A container of a workload by name; by default the one named like the workload."""
    (found,) = [c for c in containers_of(objects, kind, name) if c["name"] == (container or name)]
    return found


def env_of(c: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def mounts_of(
    objects: dict, kind: str, name: str, container_name: str | None = None
) -> dict[str, tuple[str, str]]:
    """mountPath -> (volume kind, what it names): a claim, config map, claim template or
    emptyDir, of one container."""
    spec = objects[(kind, name)]["spec"]
    volumes = {}
    for v in spec["template"]["spec"].get("volumes", []):
        if "persistentVolumeClaim" in v:
            volumes[v["name"]] = ("claim", v["persistentVolumeClaim"]["claimName"])
        elif "configMap" in v:
            volumes[v["name"]] = ("configMap", v["configMap"]["name"])
        elif "emptyDir" in v:
            volumes[v["name"]] = ("emptyDir", v["name"])
    for t in spec.get("volumeClaimTemplates", []):
        volumes[t["metadata"]["name"]] = ("claimTemplate", t["metadata"]["name"])
    c = container(objects, kind, name, container_name)
    return {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}


def read_only(c: dict, path: str) -> bool:
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == path]
    return mount.get("readOnly", False)


def generated(kustomization: dict, name: str) -> list[str]:
    """The files of a configMapGenerator entry, as paths relative to deploy/."""
    (entry,) = [g for g in kustomization["configMapGenerator"] if g["name"] == name]
    return [f.partition("=")[2] or f for f in entry["files"]]


def compose_mounts(service: dict) -> dict[str, str]:
    return {target: compose_value(source) for target, source in mounts(service).items()}


def test_kustomization_lists_every_manifest_and_its_files_exist(kustomization: dict) -> None:
    listed = {DEPLOY / r for r in kustomization["resources"]}
    assert listed == set((DEPLOY / "k8s").glob("*.yaml"))
    assert kustomization["namespace"] == "mapcascade"
    for entry in kustomization["configMapGenerator"]:
        for source in generated(kustomization, entry["name"]):
            assert (DEPLOY / source).is_file(), source
    key = kustomization["configMapGenerator"][0]["files"][0].partition("=")[0]
    assert key == "layers.yml"


def test_layers_config_map_is_the_compose_default(kustomization: dict, compose: dict) -> None:
    api = compose["api"]
    target = api["environment"]["MAPCASCADE_LAYERS_FILE"]
    default = ROOT / compose_mounts(api)[target]
    (source,) = generated(kustomization, "mapcascade-layers")
    assert (DEPLOY / source).resolve() == default.resolve()


@pytest.mark.parametrize("service", ["api", "worker"])
def test_same_image_command_settings_and_mounts_as_compose(
    objects: dict, compose: dict, service: str
) -> None:
    c, theirs = container(objects, "Deployment", service), compose[service]
    assert c["image"] == theirs["image"]
    assert c["command"] == theirs["command"]
    ours_env, their_env = env_of(c), theirs["environment"]
    # The proxy the API believes is nginx in both, at an address of its own network (below).
    assert set(ours_env) >= set(their_env)
    for name, value in their_env.items():
        if ours_env[name] is not None and name != "MAPCASCADE_TRUSTED_PROXIES":
            assert ours_env[name] == compose_value(value), name
    # Same paths, backed by the same storage: the tiles and weights claims, the layers file.
    wanted = {"tiles": ("claim", "tiles"), "weights": ("claim", "weights")}
    ours = mounts_of(objects, "Deployment", service)
    for target, source in compose_mounts(theirs).items():
        if target == their_env["MAPCASCADE_LAYERS_FILE"]:
            assert ours[target] == ("configMap", "mapcascade-layers")
        else:
            assert ours[target] == wanted[source], target
    assert set(ours) == set(compose_mounts(theirs))


def test_api_port_and_probes(objects: dict, compose: dict) -> None:
    api = container(objects, "Deployment", "api")
    their_port = [str(p) for p in compose["api"].get("expose", compose["api"].get("ports", []))]
    (port,) = api["ports"]
    assert any(p.rsplit(":", 1)[-1] == str(port["containerPort"]) for p in their_port)
    cmd = api["command"]
    assert cmd[cmd.index("--port") + 1] == str(port["containerPort"])
    # /ready is 503 while KEDA holds zero workers: it must not take the API out of service.
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["path"] == "/health"
        assert api[probe]["httpGet"]["port"] == port["name"]


def test_nginx_in_front_as_in_compose(objects: dict, compose: dict, kustomization: dict) -> None:
    nginx, theirs = container(objects, "Deployment", "api", "nginx"), compose["nginx"]
    assert nginx["image"] == theirs["image"]
    published = str(theirs["ports"][0]).rsplit(":", 1)[-1]
    (port,) = nginx["ports"]
    assert str(port["containerPort"]) == published
    # Clients reach nginx: the Service targets its port, never the API's.
    pods = objects[("Deployment", "api")]["spec"]["selector"]["matchLabels"]
    services = [o for (kind, _), o in objects.items() if kind == "Service"]
    (service,) = [o for o in services if o["spec"]["selector"] == pods]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # The tiles read-only where compose mounts them, the same server config.
    their_mounts = compose_mounts(theirs)
    data = compose["api"]["environment"]["MAPCASCADE_DATA_DIR"]
    ours = mounts_of(objects, "Deployment", "api", "nginx")
    assert their_mounts[data] == "tiles" and ours[data] == ("claim", "tiles")
    assert read_only(nginx, data)
    conf = "/etc/nginx/conf.d/default.conf"
    assert ours[conf] == ("configMap", "mapcascade-nginx-default")
    (source,) = generated(kustomization, "mapcascade-nginx-default")
    assert (DEPLOY / source).resolve() == (ROOT / their_mounts[conf]).resolve()
    # The config is rendered as compose renders it, into the folder default.conf includes.
    render = container(objects, "Deployment", "api", "nginx-config")
    their_render = compose["nginx-config"]
    assert render["image"] == their_render["image"]
    cmd, their_cmd = render["command"], their_render["command"]
    api_at = cmd.index("--api") + 1
    assert cmd[:api_at] + cmd[api_at + 1 :] == their_cmd[:api_at] + their_cmd[api_at + 1 :]
    out = Path(cmd[cmd.index("--out") + 1])
    assert f"include {out};" in (ROOT / their_mounts[conf]).read_text()
    rendered = mounts_of(objects, "Deployment", "api", "nginx-config")
    assert rendered[str(out.parent)] == ours[str(out.parent)] == ("emptyDir", "nginx-config")
    # The template where compose mounts deploy/nginx, the layers and settings of the API.
    # The config map replaces the folder: it must hold every template `nginx-config` reads.
    templates = generated(kustomization, "mapcascade-nginx-template")
    (template_dir,) = [t for t, s in compose_mounts(their_render).items() if s == "./deploy/nginx"]
    assert rendered[template_dir] == ("configMap", "mapcascade-nginx-template")
    wanted = set((ROOT / "deploy" / "nginx").glob("*.template"))
    assert {(DEPLOY / t).resolve() for t in templates} == {t.resolve() for t in wanted}
    their_env = their_render["environment"]
    assert rendered[their_env["MAPCASCADE_LAYERS_FILE"]] == ("configMap", "mapcascade-layers")
    for name, value in their_env.items():
        assert name in env_of(render), name
        if value is not None:  # None: passed on from the host, a secret here
            assert env_of(render)[name] == compose_value(value), name
    # nginx reaches the API beside it in the pod, and the API believes that address only.
    host, _, api_port = cmd[api_at].rpartition(":")
    api = container(objects, "Deployment", "api")
    assert api_port == str(api["ports"][0]["containerPort"])
    assert json.loads(env_of(api)["MAPCASCADE_TRUSTED_PROXIES"] or "") == [host] == ["127.0.0.1"]


def test_admin_token_comes_from_an_optional_secret(objects: dict) -> None:
    api = container(objects, "Deployment", "api")
    (token,) = [e for e in api["env"] if e["name"] == "MAPCASCADE_ADMIN_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True


def test_worker_requests_one_gpu_like_the_compose_reservation(objects: dict, compose: dict) -> None:
    worker = container(objects, "Deployment", "worker")
    (device,) = compose["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    for side in ("requests", "limits"):
        assert worker["resources"][side]["nvidia.com/gpu"] == device["count"]
    pod = objects[("Deployment", "worker")]["spec"]["template"]["spec"]
    grace = compose["worker"]["stop_grace_period"]
    assert pod["terminationGracePeriodSeconds"] == int(grace.removesuffix("s"))
    assert "ports" not in worker  # nothing to scrape or probe


def test_redis_matches_compose_and_the_url_the_pods_use(objects: dict, compose: dict) -> None:
    redis = container(objects, "StatefulSet", "redis")
    assert redis["image"] == compose["redis"]["image"]
    assert redis["command"] == compose["redis"]["command"]
    assert mounts_of(objects, "StatefulSet", "redis") == {"/data": ("claimTemplate", "redis-data")}
    url = urlparse(env_of(container(objects, "Deployment", "api"))["MAPCASCADE_REDIS_URL"] or "")
    service = objects[("Service", url.hostname)]["spec"]
    assert service["ports"][0]["port"] == url.port
    assert redis["ports"][0]["containerPort"] == url.port


def test_services_and_claims_resolve(objects: dict) -> None:
    for (kind, name), obj in objects.items():
        if kind in {"Deployment", "StatefulSet"}:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
            for c in containers_of(objects, kind, name):
                for source, claim in mounts_of(objects, kind, name, c["name"]).values():
                    if source == "claim":
                        assert ("PersistentVolumeClaim", claim) in objects, (name, claim)
    pods = [
        (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"]["containers"])
        for (kind, _), o in objects.items()
        if kind in {"Deployment", "StatefulSet"}
    ]
    for (kind, name), obj in objects.items():
        if kind != "Service":
            continue
        selected = [cs for labels, cs in pods if obj["spec"]["selector"].items() <= labels.items()]
        assert selected, f"Service {name} selects no pod"
        port_names = {p.get("name") for cs in selected for c in cs for p in c.get("ports", [])}
        for port in obj["spec"]["ports"]:
            assert port["targetPort"] in port_names, (name, port)


def test_keda_scales_the_gpu_workers_on_the_real_queue_to_zero(
    objects: dict, kustomization: dict
) -> None:
    (scaled,) = [o for (kind, _), o in objects.items() if kind == "ScaledObject"]
    spec = scaled["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = container(objects, "Deployment", spec["scaleTargetRef"]["name"])
    assert target["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    # The list RQ keeps for the queue the API enqueues block jobs on.
    queue_name = Settings.model_fields["queue_name"].default
    assert meta["listName"] == Queue(queue_name, connection=Redis()).key
    # The same Redis as the pods, by its full name: KEDA runs in its own namespace.
    url = urlparse(env_of(container(objects, "Deployment", "worker"))["MAPCASCADE_REDIS_URL"] or "")
    host, _, port = meta["address"].rpartition(":")
    assert host == f"{url.hostname}.{kustomization['namespace']}.svc.cluster.local"
    assert int(port) == url.port
    assert meta["databaseIndex"] == url.path.lstrip("/")
    assert int(meta["activationListLength"]) == 0  # one queued block wakes a worker
