"""A Kubernetes API server for the operator tests: kmock's emulator with what
kmock 0.8 lacks and kopf needs.

- uid, resourceVersion, generation (bumped when spec changes) and
  creationTimestamp are stamped, so kopf's finalizer JSON patch (`test` on
  resourceVersion) works; a failed `test` answers 422, not 500;
- WATCH honours resourceVersion (no ADDED replay of what a LIST returned);
- generateName is honoured (every kopf Event is `kopf-event-…`);
- the status and scale subresources change only what they own, and a patch of
  the main resource leaves status alone, as the real server does.

Jobs and Deployments have no controllers here: tests move their status forward
(`set_status`). `serving()` starts one with a kubeconfig pointing at it (the
chart tests answer Helm's `lookup` with it too)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
import yaml
from typing_extensions import override

WITH_STATUS = {"taskhubs", "deployments", "jobs"}


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch that turns `old` into `new` (kmock applies merges)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value) if isinstance(value, dict) else value
    return patch


def apply_patch(current: dict[str, Any], data: Any) -> dict[str, Any]:
    if isinstance(data, list):
        return jsonpatch.apply_patch(current, data, in_place=False)  # type: ignore[no-any-return]
    return merge(current, data)


def merge(base: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def _replace_data(request: kmock.Request, data: Any) -> None:
    # kmock matches a request to its reactions by identity (the request log), so
    # the stamped or rewritten body goes into the same frozen Request object.
    object.__setattr__(request, "data", data)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _mutations: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)

    def _key(self, request: kmock.Request) -> Any:
        assert request.resource is not None and request.name is not None
        return (request.resource, request.namespace, request.name)

    def current(self, request: kmock.Request) -> dict[str, Any] | None:
        key = self._key(request)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _rejected(self, status: int, reason: str, message: str) -> Any:
        return self._render_error(
            kmock.KubernetesError(status=status, reason=reason, message=message)
        )

    @override
    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is None or request.action not in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
        ):
            return await super()._handle(request)
        async with self._mutations:
            if request.action == kmock.action.CREATE:
                _replace_data(request, self._stamped_new(request))
            elif request.name is not None:
                current = self.current(request)
                if current is None:
                    return await super()._handle(request)
                try:
                    changed = self._patched(request, current)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    return await self._rejected(422, "Invalid", f"patch not applied: {exc}")
                _replace_data(request, merge_diff(current, changed))
            return await super()._handle(request)

    def _stamped_new(self, request: kmock.Request) -> dict[str, Any]:
        obj = copy.deepcopy(request.data or {})
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1
        meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if request.namespace:
            meta["namespace"] = request.namespace
        return obj

    def _patched(self, request: kmock.Request, current: dict[str, Any]) -> dict[str, Any]:
        assert request.resource is not None
        sub = request.subresource
        if sub == "scale":
            replicas = (request.data or {}).get("spec", {}).get("replicas")
            changed = copy.deepcopy(current)
            changed.setdefault("spec", {})["replicas"] = replicas
        else:
            changed = apply_patch(current, request.data)
            if sub == "status":
                changed = {**current, "status": changed.get("status")}
            elif request.resource.plural in WITH_STATUS:
                changed.pop("status", None)
                if "status" in current:
                    changed["status"] = current["status"]
        meta = changed.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        if changed.get("spec") != current.get("spec"):
            meta["generation"] = int(current.get("metadata", {}).get("generation") or 1) + 1
        return changed

    @override
    async def _serve_list(self, request: kmock.Request) -> Any:
        listed = await super()._serve_list(request)
        assert isinstance(listed, dict)
        listed["metadata"] = {"resourceVersion": self.resource_version}
        return listed

    @property
    def resource_version(self) -> str:
        value = next(self._versions)
        return str(value)

    @override
    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""
        since = request.params.get("resourceVersion", "")
        newer_than = int(since) if since.isdigit() else 0
        assert request.resource is not None
        async with self._lock:
            existing = [
                copy.deepcopy(obj.raw)
                for (resource, namespace, _), obj in self.objects.items()
                if resource == request.resource
                and not obj.deleted
                and (request.namespace is None or namespace == request.namespace)
            ]
        for raw in existing:
            if int(raw.get("metadata", {}).get("resourceVersion") or 0) > newer_than:
                yield {"type": "ADDED", "object": raw}
        async for event in self._buses[request.resource]:
            namespace = event.get("object", {}).get("metadata", {}).get("namespace")
            if request.namespace is None or namespace == request.namespace:
                yield event


@contextlib.asynccontextmanager
async def serving(
    resources: Mapping[str, Mapping[str, Any]], kubeconfig: Path
) -> AsyncIterator[ApiServer]:
    """An ApiServer on a local port, serving `resources` ("group/version/plural":
    {"kind", "subresources", "namespaced"}) with every verb, and a kubeconfig
    written to `kubeconfig` that points at it with a bearer token (plain http;
    kopf and Helm read it like any other). Enter it on the loop that serves it."""
    async with ApiServer() as api, kmock.Server(api):
        for resource, info in resources.items():
            api.resources[resource] = kmock.ResourceInfo(
                kind=info["kind"],
                namespaced=info.get("namespaced", True),
                verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
                subresources=set(info.get("subresources", ())),
            )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": str(api.url)}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
            "current-context": "kmock",
        }
        await asyncio.to_thread(kubeconfig.write_text, yaml.safe_dump(config))
        yield api
