"""A minimal in-process HTTP client of an ASGI app (Starlette's TestClient needs httpx2,
which the project does not install)."""

from __future__ import annotations

import asyncio
import json as jsonlib
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return jsonlib.loads(self.text)


class AsgiClient:
    """``get``/``post`` against an ASGI app, one request at a time."""

    def __init__(self, app) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(
        self,
        path: str,
        json: Any = None,
        content: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json)
            headers.setdefault("Content-Type", "application/json")
        return self.request("POST", path, content or "", headers)

    def request(
        self, method: str, path: str, content: str = "", headers: dict[str, str] | None = None
    ) -> Reply:
        return asyncio.run(self._request(method, path, content.encode(), headers or {}))

    async def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "server": ("test", 80),
            "client": ("test", 1234),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
        }
        sent = False
        status, out_headers, chunks = 0, {}, []

        async def receive() -> dict:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers.update({k.decode(): v.decode() for k, v in message["headers"]})
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Reply(status, out_headers, b"".join(chunks).decode())
