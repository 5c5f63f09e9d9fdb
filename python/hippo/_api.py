"""The Python API: one set of methods over two transports. Each method
builds the REST request (the body and query of ``/v1/...``, see
``/openapi.json``) and hands it to ``_send``: :class:`Memory` answers it
in-process with the native engine, :class:`Client` over HTTP. Answers are
the REST JSON as dicts; error answers raise :class:`HippoError`."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from os import PathLike
from typing import Any, Dict, Mapping, Optional, Sequence, Union

Json = Dict[str, Any]
Time = Union[datetime, str]


class HippoError(Exception):
    """An error answer: ``status`` (HTTP), ``code`` (e.g. ``not_found``) and
    ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class InvalidInput(HippoError, ValueError):
    """The request was malformed or out of range (400)."""


class Unauthorized(HippoError, PermissionError):
    """No API key, or one that is unknown, revoked or expired (401)."""


class Forbidden(HippoError, PermissionError):
    """The key may not do this, or not for this user/agent (403)."""


class NotFound(HippoError, LookupError):
    """No such memory (or none this key may see) (404)."""


class Conflict(HippoError):
    """The change conflicts with the stored state (409)."""


class PayloadTooLarge(HippoError, ValueError):
    """The request body is too large (413)."""


class RateLimited(HippoError):
    """Too many requests with this key; ``retry_after`` seconds (429)."""

    retry_after: Optional[float] = None


class Unavailable(HippoError):
    """The server is overloaded or its storage refuses writes; nothing was
    changed, retry later (503)."""


_BY_STATUS = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    503: Unavailable,
}


def _raise_for(status: int, text: str) -> None:
    try:
        err = json.loads(text)["error"]
        code, message = err["code"], err["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", text[:500]
    raise _BY_STATUS.get(status, HippoError)(status, code, message)


def _time(t: Optional[Time]) -> Optional[str]:
    return t.isoformat() if isinstance(t, datetime) else t


def _clean(d: Mapping[str, Any]) -> Json:
    """Drops arguments left at None (the server's defaults apply)."""
    return {k: v for k, v in d.items() if v is not None}


def _query(params: Mapping[str, Any]) -> str:
    params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in _clean(params).items()}
    return ("?" + urllib.parse.urlencode(params)) if params else ""


def _id(memory_id: str) -> str:
    return urllib.parse.quote(str(memory_id), safe="")


class _Api:
    """The methods, shared by :class:`Memory` and :class:`Client`."""

    def _send(self, method: str, path: str, body: Optional[Json] = None) -> Any:
        raise NotImplementedError

    def add(
        self,
        text: Optional[str] = None,
        *,
        messages: Optional[Sequence[Mapping[str, str]]] = None,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kind: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        event_time: Optional[Time] = None,
        infer: Optional[bool] = None,
        confidence: Optional[float] = None,
        force: Optional[bool] = None,
        ttl_seconds: Optional[int] = None,
        expires_at: Optional[Time] = None,
    ) -> Json:
        """Remembers a text (a note, fact or document) or conversation turns
        (``messages``: dicts with ``role``, ``content`` and optional
        ``name``). Durable and searchable when this returns. Returns
        ``{"results": [...], "duplicates": [...], "rejected": [...]}``."""
        body = _clean(
            {
                "text": text,
                "messages": list(messages) if messages is not None else None,
                "user_id": user_id,
                "agent_id": agent_id,
                "session_id": session_id,
                "kind": kind,
                "metadata": dict(metadata) if metadata is not None else None,
                "event_time": _time(event_time),
                "infer": infer,
                "confidence": confidence,
                "force": force,
                "ttl_seconds": ttl_seconds,
                "expires_at": _time(expires_at),
            }
        )
        return self._send("POST", "/v1/memories", body)

    def add_batch(self, items: Sequence[Mapping[str, Any]]) -> Json:
        """Remembers several items atomically (each a dict with the
        arguments of :meth:`add`)."""
        return self._send("POST", "/v1/memories/batch", {"items": [dict(i) for i in items]})

    def search(
        self,
        query: str,
        *,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        top_k: Optional[int] = None,
        budget_tokens: Optional[int] = None,
        kinds: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        as_of: Optional[Time] = None,
        context_turns: Optional[int] = None,
        diversity: Optional[float] = None,
        include_shared: Optional[bool] = None,
        format: Optional[str] = None,
        min_relevance: Optional[float] = None,
        reference_time: Optional[Time] = None,
    ) -> Json:
        """Hybrid search (keywords, vectors, names, time). Returns
        ``{"results": [...], ...}``; with ``format="prompt"`` also
        ``"prompt"``: the results as one quoted block for an LLM. Each
        result's ``relevance`` (0..1) is comparable across queries;
        ``min_relevance`` leaves out results below it (0.03 drops nearly
        all results of a question nothing stored is about).
        ``reference_time`` is when the question is asked: "last week" in
        the query means the week before it (default now)."""
        filters = _clean(
            {
                "kind": list(kinds) if kinds is not None else None,
                "metadata": dict(metadata) if metadata is not None else None,
            }
        )
        body = _clean(
            {
                "query": query,
                "user_id": user_id,
                "agent_id": agent_id,
                "session_id": session_id,
                "top_k": top_k,
                "budget_tokens": budget_tokens,
                "filters": filters or None,
                "as_of": _time(as_of),
                "context_turns": context_turns,
                "diversity": diversity,
                "include_shared": include_shared,
                "format": format,
                "min_relevance": min_relevance,
                "reference_time": _time(reference_time),
            }
        )
        return self._send("POST", "/v1/search", body)

    def get(self, memory_id: str) -> Json:
        """One memory by id."""
        return self._send("GET", f"/v1/memories/{_id(memory_id)}")

    def update(
        self,
        memory_id: str,
        *,
        content: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        event_time: Optional[Time] = None,
        valid_from: Optional[Time] = None,
        reason: Optional[str] = None,
    ) -> Json:
        """Changes a memory: a new version; the previous one is kept in its
        history, valid until the change."""
        body = _clean(
            {
                "content": content,
                "metadata": dict(metadata) if metadata is not None else None,
                "event_time": _time(event_time),
                "valid_from": _time(valid_from),
                "reason": reason,
            }
        )
        return self._send("PATCH", f"/v1/memories/{_id(memory_id)}", body)

    def delete(self, memory_id: str, *, hard: bool = False) -> Json:
        """Deletes a memory: soft by default (restorable); ``hard=True``
        erases it for good with its history and derived memories."""
        return self._send("DELETE", f"/v1/memories/{_id(memory_id)}{_query({'hard': hard or None})}")

    def delete_all(
        self,
        *,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> Json:
        """Erases every memory of a user, agent or session (for good)."""
        q = _query({"user_id": user_id, "agent_id": agent_id, "session_id": session_id})
        return self._send("DELETE", f"/v1/memories{q}")

    def history(self, memory_id: str) -> Json:
        """A memory's versions and events."""
        return self._send("GET", f"/v1/memories/{_id(memory_id)}/history")

    def list(
        self,
        *,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kind: Optional[str] = None,
        status: Optional[str] = None,
        limit: Optional[int] = None,
        order: Optional[str] = None,
        cursor: Optional[str] = None,
    ) -> Json:
        """A page of memories (``order="desc"`` for newest first); pass the
        answer's ``next_cursor`` as ``cursor`` for the next page."""
        q = _query(
            {
                "user_id": user_id,
                "agent_id": agent_id,
                "session_id": session_id,
                "kind": kind,
                "status": status,
                "limit": limit,
                "order": order,
                "cursor": cursor,
            }
        )
        return self._send("GET", f"/v1/memories{q}")

    def feedback(self, memory_id: str, signal: str, *, note: Optional[str] = None) -> Json:
        """How a retrieved memory served: ``used``, ``helpful`` or ``wrong``."""
        body = _clean({"signal": signal, "note": note})
        return self._send("POST", f"/v1/memories/{_id(memory_id)}/feedback", body)

    def profile(self, *, user_id: Optional[str] = None, agent_id: Optional[str] = None) -> Json:
        """The profile of a user or agent (:class:`NotFound` until built)."""
        return self._send("GET", f"/v1/profile{_query({'user_id': user_id, 'agent_id': agent_id})}")


class Memory(_Api):
    """A store file opened in this process: the engine runs here, no server
    needed. ``model_dir`` is the embedding model's directory (default
    ``$HIPPO_MODEL_DIR``, else the local cache, else a download)."""

    def __init__(self, path: Union[str, "PathLike[str]"], *, model_dir: Optional[str] = None):
        from ._native import Engine

        self._engine = Engine(str(path), model_dir)

    def _send(self, method: str, path: str, body: Optional[Json] = None) -> Any:
        status, text = self._engine.request(method, path, json.dumps(body) if body is not None else None)
        if status >= 400:
            _raise_for(status, text)
        return json.loads(text)

    def close(self) -> None:
        """Stops background work; the store stays on disk."""
        self._engine.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(_Api):
    """A running ``hippo serve`` at ``base_url`` (e.g.
    ``http://127.0.0.1:8080``), with an API key when the server requires
    keys. Uses only the standard library."""

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _send(self, method: str, path: str, body: Optional[Json] = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                _raise_for(e.code, text)
            except RateLimited as limited:
                retry = e.headers.get("Retry-After")
                limited.retry_after = float(retry) if retry else None
                raise

    def health(self) -> Json:
        """The server's ``/healthz``."""
        return self._send("GET", "/healthz")

