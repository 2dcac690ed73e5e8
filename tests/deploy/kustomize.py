# A small kustomize renderer for the tests, so the Kubernetes manifests can be validated where
# `kubectl` is not installed.
#
# Rules: it supports exactly the kustomization fields deploy/k8s uses (resources, namespace,
# images, replicas, JSON 6902 patches with a kind/name target, and the strategic-merge patch
# `$patch: delete` that removes one resource) and refuses anything else
# with NotImplementedError, so a new feature in a kustomization cannot be silently ignored.
# Where kubectl is present, tests/deploy/test_manifests.py checks that this renderer and
# `kubectl kustomize` give the same documents.
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pathlib import Path

SUPPORTED_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
)
CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
)
SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"})

Document = dict[str, Any]


def load_documents(path: Path) -> list[Document]:
    """The non-empty YAML documents of one file."""
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def render(directory: Path) -> list[Document]:
    """Build the kustomization in `directory` (its resources, then its transformations)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise NotImplementedError(f"{directory}: kustomization fields {sorted(unsupported)}")
    documents: list[Document] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        documents += render(path) if path.is_dir() else load_documents(path)
    documents = copy.deepcopy(documents)
    namespace = kustomization.get("namespace")
    if namespace:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED_KINDS:
                document["metadata"]["namespace"] = namespace
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, patch, documents)
    for image in kustomization.get("images", []):
        for document in documents:
            _set_image(document, image)
    for replicas in kustomization.get("replicas", []):
        targets = [
            d
            for d in documents
            if d["kind"] in SCALABLE_KINDS and d["metadata"]["name"] == replicas["name"]
        ]
        if not targets:
            raise ValueError(f"{directory}: replicas for unknown {replicas['name']!r}")
        for document in targets:
            document["spec"]["replicas"] = replicas["count"]
    return documents


def _apply_patch(directory: Path, patch: dict[str, Any], documents: list[Document]) -> None:
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if isinstance(operations, dict) and operations.get("$patch") == "delete":
        _delete(directory, operations, documents)
        return
    if not isinstance(operations, list):
        raise NotImplementedError(f"{directory}: only JSON 6902 patches (a list of operations)")
    target = patch["target"]
    if set(target) - {"kind", "name"}:
        raise NotImplementedError(f"{directory}: patch target {target}")
    matches = [
        d
        for d in documents
        if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
    ]
    if not matches:
        raise ValueError(f"{directory}: no resource matches the patch target {target}")
    for document in matches:
        for operation in operations:
            apply_operation(document, operation)


def _delete(directory: Path, patch: dict[str, Any], documents: list[Document]) -> None:
    """A strategic-merge `$patch: delete`: the resource of that kind and name goes."""
    kind, name = patch["kind"], patch["metadata"]["name"]
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    if not found:
        raise ValueError(f"{directory}: no {kind} {name!r} to delete")
    documents[:] = [d for d in documents if d not in found]


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def apply_operation(document: Document, operation: dict[str, Any]) -> None:
    """Apply one JSON Patch operation (RFC 6902: add, replace, remove) in place."""
    op = operation["op"]
    *parents, last = _pointer(operation["path"])
    parent: Any = document
    for part in parents:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        if op == "add":
            index = len(parent) if last == "-" else int(last)
            parent.insert(index, operation["value"])
        elif op == "replace":
            parent[int(last)] = operation["value"]
        elif op == "remove":
            del parent[int(last)]
        else:
            raise NotImplementedError(f"JSON patch op {op!r}")
    elif op in ("add", "replace"):
        if op == "replace" and last not in parent:
            raise KeyError(f"replace of a missing member {operation['path']}")
        parent[last] = operation["value"]
    elif op == "remove":
        del parent[last]
    else:
        raise NotImplementedError(f"JSON patch op {op!r}")


def _set_image(document: Document, image: dict[str, str]) -> None:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, separator, tag = container["image"].rpartition(":")
        if not separator or "/" in tag:  # no tag; the colon belongs to a registry port
            name, tag = container["image"], ""
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        new_tag = image.get("newTag", tag)
        container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
