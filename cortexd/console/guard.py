"""What keeps the web console safe to leave open: the Host check, the headers, the token.

- The Host header must name this machine by an IP literal, `localhost`, or its hostname: a
  page of another site that rebinds its DNS name to 127.0.0.1 sends its own name, and gets
  421 (DNS rebinding).
- Every answer carries a Content-Security-Policy that allows the console's own files only
  (no inline script, no other origin, no framing), `nosniff` and no referrer.
- What changes something or sends a request (try-it) needs the daemon's token, in the
  `X-Cortexd-Token` header: it is written into the console's page, which a foreign page
  cannot read (same-origin policy), and a cross-site form cannot set a header.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket

from aiohttp import web
from aiohttp.typedefs import Handler

TOKEN_HEADER = "X-Cortexd-Token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def machine_names() -> frozenset[str]:
    """The names this machine answers to besides IP literals (read once, at start)."""
    names = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return frozenset(names)


def host_allowed(host_header: str | None, names: frozenset[str]) -> bool:
    """Whether a Host header names this machine: an IP literal (v4, or v6 in brackets), or one
    of `names`, with any port."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8889
        end = host.find("]")
        return end > 0 and _is_ip(host[1:end])
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return _is_ip(host) or host.rstrip(".") in names


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def token_matches(request: web.Request, token: str) -> bool:
    given = request.headers.get(TOKEN_HEADER, "")
    return hmac.compare_digest(given.encode(), token.encode())


def guard_middleware(names: frozenset[str]):
    """Every answer of the admin port: the Host check, then the security headers."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), names):
            response: web.StreamResponse = web.json_response(
                {"error": "this address answers to its IP address, localhost or the machine's name "
                          "only (DNS rebinding protection); open it as http://127.0.0.1:PORT/"},
                status=421)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                response = web.json_response({"error": e.reason}, status=e.status)
        if not response.prepared:  # streams set theirs before they start
            response.headers.update(SECURITY_HEADERS)
        return response

    return guard
