"""A protocol-faithful Slack Web API server for tests (Slack itself is SaaS).

Speaks what Sentinel uses: `chat.postMessage`, `chat.update`, `conversations.history`,
`conversations.replies`, `auth.test` — JSON or form bodies, Bearer-token auth, Slack's
`{"ok": false, "error": ...}` answers with HTTP 200, HTTP 429 with `Retry-After`, 500s,
and Block Kit limits (header 150 chars, section 3,000, 50 blocks → `invalid_blocks`).
Failures are injected per method; every call is recorded. `post_interval` (seconds; 0,
the default, is off) enforces chat.postMessage's documented limit of about one message a
second per channel, strictly (Slack allows short bursts; this allows none): a post sooner
after the channel's last one answers HTTP 429, `ratelimited`, with `Retry-After` the
whole seconds left.

File uploads, Slack's current three-step flow (what slack-sdk's `files_upload_v2` does):
`files.getUploadURLExternal` (filename and length required, else `invalid_arguments`)
answers an `upload_url` on this server and a file id; a POST of the bytes to that URL
answers `OK - <length>` (HTTP 200; an unknown URL 404); `files.completeUploadExternal`
shares the uploaded files in `channel_id` (and `thread_ts`): a file id never issued or
never uploaded is `file_not_found`, an unknown channel `channel_not_found`. Inject a
failure of the upload itself with `fail_next("upload", Failure(status=500))`.

Interactivity: `block_actions` builds the payload Slack posts when someone clicks a
button of a message, and `signed` encodes and signs it the way Slack does (form field
`payload`, `X-Slack-Request-Timestamp`, `X-Slack-Signature: v0=HMAC-SHA256(secret,
"v0:<timestamp>:<body>")`).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from support.threaded import ThreadedServer

TOKEN = "xoxb-test-token"
CHANNEL = "C0SENTINEL"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def block_actions(message: Message, action_id: str, user: str = "alice") -> dict[str, Any]:
    """The `block_actions` payload of a click on `action_id` in `message`."""
    button = next(
        (
            e
            for b in message.blocks
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == action_id
        ),
        {"action_id": action_id, "type": "button", "text": {"type": "plain_text", "text": "?"}},
    )
    return {
        "type": "block_actions",
        "user": {"id": f"U0{user.upper()}", "username": user, "name": user, "team_id": "T0TEST"},
        "api_app_id": "A0SENTINEL",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        },
        "trigger_id": "1111.2222.abcd",
        "team": {"id": "T0TEST", "domain": "test"},
        "channel": {"id": message.channel, "name": "chatbot-runtime"},
        "message": {"type": "message", "ts": message.ts, "text": message.text},
        "response_url": "https://hooks.slack.com/actions/T0TEST/1/xyz",
        "actions": [{**button, "block_id": "sentinel_actions", "action_ts": f"{time.time():.6f}"}],
    }


def signed(
    payload: dict[str, Any], timestamp: float, secret: str = SIGNING_SECRET
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an interaction request as Slack sends and signs it."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(timestamp))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }
    return body, headers


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    updates: int = 0


@dataclass
class UploadedFile:
    id: str
    filename: str
    length: int
    alt_txt: str | None = None
    data: bytes | None = None
    title: str | None = None
    channel: str | None = None
    thread_ts: str | None = None


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    delay: float = 0.0  # record the call, then wait this long before answering


@dataclass
class FakeSlack(ThreadedServer):
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    post_interval: float = 0.0
    _posted_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    def fail_next(self, method: str, *failures: Failure) -> None:
        with self._lock:
            self.failures.setdefault(method, []).extend(failures)

    def roots(self) -> list[Message]:
        return [m for m in self.messages if m.thread_ts is None]

    def replies(self, root: Message) -> list[Message]:
        return [m for m in self.messages if m.thread_ts == root.ts]

    def thread_files(self, root: Message) -> list[UploadedFile]:
        """Files shared into a message's thread, in upload order."""
        return [f for f in self.files.values() if f.thread_ts == root.ts and f.channel]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        return app

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            part = form.get("file") or form.get("filename")
            data = part.file.read() if isinstance(part, web.FileField) else str(part).encode()
        else:
            data = await request.read()
        with self._lock:
            self.calls.append(("upload", {"file_id": file_id, "length": len(data)}))
            failure = (
                self.failures.get("upload", []).pop(0) if self.failures.get("upload") else None
            )
            if failure is not None:
                return web.Response(status=failure.status, text="upload failed")
            uploaded = self.files.get(file_id)
            if uploaded is None:
                return web.Response(status=404, text="Not Found")
            uploaded.data = data
        return web.Response(text=f"OK - {len(data)}")

    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> web.Response:
        filename, length = params.get("filename"), str(params.get("length", ""))
        if not filename or not length.isdigit() or int(length) <= 0:
            return web.json_response(
                {
                    "ok": False,
                    "error": "invalid_arguments",
                    "response_metadata": {
                        "messages": ["[ERROR] missing required field: filename or length"]
                    },
                }
            )
        file_id = f"F{next(self._seq):010d}"
        with self._lock:
            self.files[file_id] = UploadedFile(
                file_id, str(filename), int(length), params.get("alt_txt")
            )
        return self._ok(upload_url=f"{self.url}/upload/v1/{file_id}", file_id=file_id)

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> web.Response:
        wanted = params.get("files")
        if isinstance(wanted, str):
            wanted = json.loads(wanted)
        if not isinstance(wanted, list) or not wanted:
            return self._error("invalid_arguments")
        channel = params.get("channel_id")
        if channel is not None and channel != CHANNEL:
            return self._error("channel_not_found")
        with self._lock:
            found = [self.files.get(str(f.get("id"))) for f in wanted]
            if any(f is None or f.data is None for f in found):
                return self._error("file_not_found")
            out = []
            for f, spec in zip(found, wanted, strict=True):
                assert f is not None
                f.title = spec.get("title") or f.filename
                f.channel = channel
                f.thread_ts = params.get("thread_ts")
                out.append({"id": f.id, "name": f.filename, "title": f.title, "size": f.length})
        return self._ok(files=out)

    async def _handle(self, request: web.Request) -> web.Response:
        import asyncio

        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(dict(await request.post()))
        with self._lock:
            self.calls.append((method, params))
            failure = self.failures.get(method, []).pop(0) if self.failures.get(method) else None
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if failure is not None and failure.delay == 0:
            if failure.status == 429:
                headers = {"Retry-After": str(failure.retry_after or 1)}
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers=headers
                )
            if failure.status >= 500:
                return web.Response(status=failure.status, text="upstream connect error")
            return web.json_response({"ok": False, "error": failure.error or "fatal_error"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        response: web.Response = handler(params)
        if failure is not None and failure.delay:
            await asyncio.sleep(failure.delay)
        return response

    def _ok(self, **data: Any) -> web.Response:
        return web.json_response({"ok": True, **data})

    def _error(self, error: str) -> web.Response:
        return web.json_response({"ok": False, "error": error})

    def _blocks(self, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        blocks = params.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if len(blocks) > 50:
            return None
        for block in blocks:
            text = (block.get("text") or {}).get("text", "")
            if block["type"] == "header" and len(text) > 150:
                return None
            if block["type"] == "section" and len(text) > 3000:
                return None
        return list(blocks)

    def _auth_test(self, params: dict[str, Any]) -> web.Response:
        return self._ok(team="test", user="sentinel")

    def _chat_postMessage(self, params: dict[str, Any]) -> web.Response:
        if params.get("channel") not in (CHANNEL, "#chatbot-runtime"):
            return self._error("channel_not_found")
        blocks = self._blocks(params)
        if blocks is None:
            return self._error("invalid_blocks")
        if not params.get("text") and not blocks:
            return self._error("no_text")
        if self.post_interval > 0:
            channel, now = str(params["channel"]), time.monotonic()
            with self._lock:
                wait = self._posted_at.get(channel, -math.inf) + self.post_interval - now
                if wait <= 0:
                    self._posted_at[channel] = now
            if wait > 0:
                headers = {"Retry-After": str(math.ceil(wait))}
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers=headers
                )
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        ts = f"{int(time.time())}.{next(self._seq):06d}"
        message = Message(
            CHANNEL, ts, params.get("text", ""), blocks, params.get("thread_ts"), metadata
        )
        with self._lock:
            self.messages.append(message)
        return self._ok(channel=CHANNEL, ts=ts, message={"text": message.text, "ts": ts})

    def _chat_update(self, params: dict[str, Any]) -> web.Response:
        blocks = self._blocks(params)
        if blocks is None:
            return self._error("invalid_blocks")
        for message in self.messages:
            if message.channel == params.get("channel") and message.ts == params.get("ts"):
                message.text = params.get("text", message.text)
                message.blocks = blocks or message.blocks
                message.updates += 1
                return self._ok(channel=message.channel, ts=message.ts)
        return self._error("message_not_found")

    def _conversations_history(self, params: dict[str, Any]) -> web.Response:
        if params.get("channel") != CHANNEL:
            return self._error("channel_not_found")
        oldest = float(params.get("oldest", 0))
        found = [
            m
            for m in self.messages
            if m.thread_ts is None and float(m.ts.split(".")[0]) >= int(oldest)
        ]
        return self._ok(messages=[self._wire(m, params) for m in reversed(found)], has_more=False)

    def _conversations_replies(self, params: dict[str, Any]) -> web.Response:
        root = next((m for m in self.messages if m.ts == params.get("ts")), None)
        if root is None:
            return self._error("thread_not_found")
        thread = [root, *self.replies(root)]
        return self._ok(messages=[self._wire(m, params) for m in thread], has_more=False)

    def _wire(self, m: Message, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
        if m.thread_ts:
            out["thread_ts"] = m.thread_ts
        if m.metadata and str(params.get("include_all_metadata")).lower() in ("1", "true"):
            out["metadata"] = m.metadata
        return out
