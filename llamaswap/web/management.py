"""Management endpoints: what is configured and loaded, unloading, reloading, profiles.

To add an endpoint: write an ``Endpoint`` subclass taking the ``App`` (or what it needs of
it) and add one ``(path, resource)`` line to ``management_routes``.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from twisted.web.server import Request

from llamaswap.capabilities import listing_fields, metadata_without_rendered
from llamaswap.config import ConfigError
from llamaswap.logs import get_logger
from llamaswap.policy import ModelState
from llamaswap.selectors import Rewriter
from llamaswap.web.app import App
from llamaswap.web.base import Branch, Endpoint, Routes, send_json, send_text
from llamaswap.web.errors import send_error

log = get_logger()


def management_routes(app: App) -> Routes:
    """The management endpoints, by path."""
    models = ModelList(app)
    return [
        (b"/v1/models", models),
        (b"/models", models),
        (b"/api/profiles", Profiles(app.names)),
        (b"/api/profiles/active", ActiveProfile(app)),
        (b"/running", Running(app)),
        (b"/unload", UnloadAll(app)),
        (b"/api/models/unload", ApiUnload(app)),
        (b"/api/config/reload", ConfigReload(app)),
        (b"/health", Health()),
    ]


class ModelList(Endpoint):
    """``GET /v1/models`` in llama-swap's shape."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        config = self._app.config
        created = int(time.time())
        records = []
        for model in sorted(config.models.values(), key=lambda m: m.id):
            if model.unlisted:
                continue
            state = self._app.processes[model.id].state
            status = "unloaded" if state is ModelState.STOPPED else "loaded"
            record: dict[str, Any] = {"id": model.id, "object": "model", "created": created,
                                      "owned_by": "llamaswap"}
            if model.name:
                record["name"] = model.name
            if model.description:
                record["description"] = model.description
            extra = listing_fields(model.capabilities)
            record.update(extra)
            meta = {**metadata_without_rendered(model.metadata, model.capabilities),
                    "type": "model", "aliases": list(model.aliases)}
            record["meta"] = {"llamaswap": meta}
            context = ({"n_ctx": extra["context_length"]} if "context_length" in extra
                       else {})
            record["meta"].update(context)
            record["status"] = {"value": status}
            records.append(record)
            if config.include_aliases_in_list:
                for alias in model.aliases:
                    records.append({**record, "id": alias, "meta": {"llamaswap": {
                        "type": "alias", "modelID": model.id}, **context}})
        for peer in config.peers.values():
            for name in peer.models:
                records.append({"id": f"{peer.id}/{name}", "object": "model",
                                "created": created, "owned_by": "llamaswap",
                                "name": f"{peer.id}: {name}",
                                "meta": {"llamaswap": {"type": "peer", "peerID": peer.id}},
                                "status": {"value": "unloaded"}})
        records += self._virtual_records(created)
        pins = self._app.names.pins()
        records = [r for r in records if not (r["id"] in pins and pins[r["id"]] is None)]
        records.sort(key=lambda r: r["id"])
        origin = request.getHeader(b"origin")  # bytes: any bytes a client sends
        if origin:
            request.setHeader("access-control-allow-origin", origin)
        send_json(request, {"object": "list", "data": records})

    def _virtual_records(self, created: int) -> list[dict[str, Any]]:
        """Listed selectors, and the active profile's pins that name nothing else."""
        names = self._app.names
        records: list[dict[str, Any]] = []
        for selector in self._app.config.selectors.values():
            if selector.unlisted:
                continue
            meta: dict[str, Any] = {**dict(selector.metadata), "type": "selector",
                                    "strategy": selector.strategy,
                                    "targets": list(selector.targets)}
            if selector.strategy == "spillover":
                meta["spillover"] = selector.spillover
            record: dict[str, Any] = {"id": selector.id, "object": "model",
                                      "created": created, "owned_by": "llamaswap"}
            if selector.name:
                record["name"] = selector.name
            if selector.description:
                record["description"] = selector.description
            record["meta"] = {"llamaswap": meta}
            record["status"] = {"value": names.selector_status(selector)}
            records.append(record)
        config = self._app.config
        for requested, target in names.pins().items():
            if target is None or config.resolve(requested) or config.resolve_peer(requested) \
                    or requested in config.selectors:
                continue
            records.append({"id": requested, "object": "model", "created": created,
                            "owned_by": "llamaswap", "name": "",
                            "meta": {"llamaswap": {"type": "profile", "target": target}},
                            "status": {"value": "unloaded"}})
        return records


class Profiles(Branch):
    """``GET /api/profiles``: the profiles and which one is active (``/active`` below)."""

    def __init__(self, names: Rewriter) -> None:
        super().__init__()
        self._names = names

    def handle_GET(self, request: Request) -> None:
        profiles = [{"id": p.name, "description": p.description,
                     "pins": {k: v or "" for k, v in p.pins.items()}}
                    for p in sorted(self._names.profiles.values(), key=lambda p: p.name)]
        send_json(request, {"active": self._names.active_profile, "profiles": profiles})


class ActiveProfile(Endpoint):
    """``PUT /api/profiles/active`` with ``{"name": "x"}`` or ``{"name": null}``."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app
        self._names = app.names

    def handle_PUT(self, request: Request) -> None:
        try:
            data = json.loads(request.content.read() if request.content else b"")
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            send_error(request, 400, "invalid profile request")
            return
        if not isinstance(data, dict) or "name" not in data:
            send_error(request, 400, "profile name is required")
            return
        name = data["name"]
        if name is not None and not isinstance(name, str):
            send_error(request, 400, "profile name must be a string or null")
            return
        if name is not None and name not in self._names.profiles:
            send_error(request, 404, f'profile "{name}" not found')
            return
        self._names.active_profile = name
        log.info("active profile: {name}", name=name or "(none)")
        self._app.observability.profile_changed(name)
        send_json(request, {"active": name})


class Running(Endpoint):
    """``GET /running``: the models not stopped, with their state and requests in flight."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        running = []
        for model_id, process in sorted(self._app.processes.items()):
            if process.state is ModelState.STOPPED:
                continue
            model = process.model
            running.append({"model": model_id, "state": process.state.value,
                            "cmd": " ".join(model.cmd), "proxy": model.proxy,
                            "ttl": model.ttl, "name": model.name,
                            "description": model.description,
                            "pid": process.model_pid,
                            "inFlight": self._app.router.in_flight(model_id),
                            **self._app.observability.model_fields(model)})
        send_json(request, {"running": running})


class UnloadAll(Endpoint):
    """``GET /unload``: stop every model, answer once they are stopped."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    async def handle_GET(self, request: Request) -> None:
        await self._app.router.unload()
        send_text(request, "OK")


class ConfigReload(Endpoint):
    """``POST /api/config/reload``: re-read the config file and apply it without downtime.

    400 with every problem if the new file is invalid (the running config stays); otherwise
    what changed per model (``llamaswap.reload``).
    """

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_POST(self, request: Request) -> None:
        try:
            changes = self._app.reload()
        except ConfigError as e:
            send_error(request, 400, "the new configuration was refused; the running one "
                       "stays in effect: " + "; ".join(e.problems), code="invalid_config")
            return
        send_json(request, {"msg": "ok", "changes": changes})


class ApiUnload(Endpoint):
    """``POST /api/models/unload`` (all) and ``/api/models/unload/<model>`` (one)."""

    allow_subpaths = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    async def handle_POST(self, request: Request) -> None:
        name = unquote("/".join(s.decode("latin-1") for s in request.postpath or []).strip("/"))
        if not name:
            await self._app.router.unload()
            send_json(request, {"msg": "ok"})
            return
        model_id = self._app.config.resolve(name)
        if model_id is None:
            send_error(request, 404, f"model '{name}' not found", code="model_not_found")
            return
        await self._app.router.unload([model_id])
        send_text(request, "OK")


class Health(Endpoint):
    """``GET /health``: llamaswap answers (reachable without an API key)."""

    def handle_GET(self, request: Request) -> None:
        send_text(request, "OK")
