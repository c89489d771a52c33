"""The REST API's front door for writes: bearer tokens checked before a body is read, bodies capped."""

import json
from collections.abc import Callable

from registry.integrations.restapi.metrics import ASGIApp, Message, Receive, Scope, Send
from registry.integrations.restapi.schemas import JSON, MAX_BODY, ApiError
from registry.integrations.restapi.write import Tokens, User

USER_KEY = "registry.user"  # the scope key where Guard leaves the authenticated User


def authenticate(tokens: Tokens, authorization: str | None) -> User:
    """The user of an Authorization header, or the 401 to answer (ApiError)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise ApiError(401, "this needs a bearer token (Authorization: Bearer TOKEN) "
                            "from REGISTRY_API_TOKENS", {"WWW-Authenticate": "Bearer"})
    user = tokens.user(credentials)
    if user is None:
        raise ApiError(401, "unknown bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return user


class Guard:
    """ASGI middleware in front of the application: a request to a write route is
    authenticated before a byte of its body is read (401), and no request body may exceed
    MAX_BODY bytes (413), whether it declares its length or comes chunked (counted as the
    application reads it). Refusals close the connection, so the rest of the body is
    never read either."""

    def __init__(self, app: ASGIApp, tokens: Tokens, writes: Callable[[Scope], bool],
                 limit: int = MAX_BODY) -> None:
        self.app = app
        self.tokens = tokens
        self.writes = writes
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.writes(scope):
            try:
                scope[USER_KEY] = authenticate(self.tokens, headers.get("authorization"))
            except ApiError as exc:
                await refuse(send, exc)
                return
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = 0  # the server refuses a malformed Content-Length itself
        if declared > self.limit:
            await refuse(send, self._too_large())
            return
        received = 0
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not refused:
                    refused = True
                    if not started:
                        await refuse(send, self._too_large())
            if refused:
                return {"type": "http.disconnect"}  # the application stops reading
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # answered already: what the application says after is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, guarded)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is over {self.limit} bytes: "
                             "a transition request is a small JSON object")


async def refuse(send: Send, exc: ApiError) -> None:
    body = json.dumps({"error": exc.message}).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
