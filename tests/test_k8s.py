"""The Kubernetes manifests (deploy/kustomization.yaml, deploy/k8s/) against docker-compose.yml:
the same images, commands, ports, settings and mount paths, and a KEDA trigger on the real queue.

No cluster is needed: the files are parsed and compared.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from redis import Redis
from rq import Queue

from app.settings import Settings

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


def container(objects: dict, kind: str, name: str) -> dict:
    (only,) = objects[(kind, name)]["spec"]["template"]["spec"]["containers"]
    return only


def env_of(c: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def mounts_of(objects: dict, kind: str, name: str) -> dict[str, tuple[str, str]]:
    """mountPath -> (volume kind, what it names): the claim, config map or template."""
    spec = objects[(kind, name)]["spec"]
    pod = spec["template"]["spec"]
    volumes = {}
    for v in pod.get("volumes", []):
        if "persistentVolumeClaim" in v:
            volumes[v["name"]] = ("claim", v["persistentVolumeClaim"]["claimName"])
        elif "configMap" in v:
            volumes[v["name"]] = ("configMap", v["configMap"]["name"])
    for t in spec.get("volumeClaimTemplates", []):
        volumes[t["metadata"]["name"]] = ("claimTemplate", t["metadata"]["name"])
    (c,) = pod["containers"]
    return {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}


def compose_mounts(service: dict) -> dict[str, str]:
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v["source"], v["target"]
        out[target] = compose_value(source)
    return out


def test_kustomization_lists_every_manifest_and_its_files_exist(kustomization: dict) -> None:
    listed = {DEPLOY / r for r in kustomization["resources"]}
    assert listed == set((DEPLOY / "k8s").glob("*.yaml"))
    assert kustomization["namespace"] == "mapcascade"
    (layers,) = kustomization["configMapGenerator"]
    key, _, source = layers["files"][0].partition("=")
    assert key == "layers.yml" and (DEPLOY / source).is_file()


def test_layers_config_map_is_the_compose_default(kustomization: dict, compose: dict) -> None:
    api = compose["api"]
    target = api["environment"]["MAPCASCADE_LAYERS_FILE"]
    default = ROOT / compose_mounts(api)[target]
    (layers,) = kustomization["configMapGenerator"]
    _, _, source = layers["files"][0].partition("=")
    assert (DEPLOY / source).resolve() == default.resolve()


@pytest.mark.parametrize("service", ["api", "worker"])
def test_same_image_command_settings_and_mounts_as_compose(
    objects: dict, compose: dict, kustomization: dict, service: str
) -> None:
    c, theirs = container(objects, "Deployment", service), compose[service]
    assert c["image"] == theirs["image"]
    assert c["command"] == theirs["command"]
    ours_env, their_env = env_of(c), theirs["environment"]
    # Compose-network specifics (nginx's fixed address) have no meaning in a cluster.
    assert set(ours_env) >= set(their_env) - {"MAPCASCADE_TRUSTED_PROXIES"}
    for name, value in their_env.items():
        if name in ours_env and ours_env[name] is not None:
            assert ours_env[name] == compose_value(value), name
    # Same paths, backed by the same storage: the tiles and weights claims, the layers file.
    (layers,) = kustomization["configMapGenerator"]
    wanted = {"tiles": ("claim", "tiles"), "weights": ("claim", "weights")}
    ours = mounts_of(objects, "Deployment", service)
    for target, source in compose_mounts(theirs).items():
        if target == their_env["MAPCASCADE_LAYERS_FILE"]:
            assert ours[target] == ("configMap", layers["name"])
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
    service = objects[("Service", "api")]["spec"]
    assert service["ports"][0]["targetPort"] == port["name"]
    # /ready is 503 while KEDA holds zero workers: it must not take the API out of service.
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["path"] == "/health"
        assert api[probe]["httpGet"]["port"] == port["name"]


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
            for _, (source, claim) in mounts_of(objects, kind, name).items():
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
