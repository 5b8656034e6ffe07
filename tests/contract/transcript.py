"""Send the same requests to two servers and keep what is comparable of the answers.

A `Transcript` records, for each request, the status, the headers that carry
meaning (Content-Type, Allow) and the decoded JSON body with volatile values
normalised: RFC 3339 timestamps become "<RFC3339>", a token becomes a summary of
its header and claims (lifetimes instead of instants, and whether it verifies
with the server's public key), `expired_at` becomes "<exp>" when it equals the
token's `exp`.  Two transcripts of the same scenario must then be equal.
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

import jwt

RFC3339 = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
MEANINGFUL_HEADERS = ("Content-Type", "Allow")
_NO_BODY = object()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str, path: str, body: Any = _NO_BODY,
            raw: Optional[bytes] = None, token: Optional[str] = None,
            headers: Optional[Mapping[str, str]] = None, timeout: float = 10.0) -> Answer:
    """One request on a fresh connection to `url` (http://host:port)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    sent = {"Content-Type": "application/json"}
    if token is not None:
        sent["Authorization"] = "Bearer " + token
    sent.update(headers or {})
    data = raw if raw is not None else (None if body is _NO_BODY else json.dumps(body).encode())
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    kept = {name: resp.headers[name] for name in MEANINGFUL_HEADERS if name in resp.headers}
    return Answer(resp.status, kept, payload)


def summarise_token(token: str, public_key: str) -> Dict[str, Any]:
    """What is stable about a token: its header, claim names and fixed values, lifetimes."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as e:
        return {"undecodable": str(e)}
    try:
        jwt.decode(token, public_key, algorithms=[header.get("alg", "")],
                   options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
        verifies = True
    except jwt.InvalidTokenError:
        verifies = False
    summary: Dict[str, Any] = {"header": header, "claims": sorted(claims), "verifies": verifies}
    for name in ("client_id", "iss", "sub", "aud"):
        if name in claims:
            summary[name] = claims[name]
    iat = claims.get("iat")
    for name in ("exp", "nbf"):
        if isinstance(claims.get(name), int) and isinstance(iat, int):
            summary[f"{name}-iat"] = claims[name] - iat
    return summary


def normalise(value: Any, public_key: str) -> Any:
    """The value with timestamps, tokens and token expiries made comparable."""
    if isinstance(value, list):
        return [normalise(v, public_key) for v in value]
    if not isinstance(value, dict):
        return value
    out: Dict[str, Any] = {}
    exp = None
    if isinstance(value.get("token"), str):
        try:
            exp = jwt.decode(value["token"], options={"verify_signature": False}).get("exp")
        except jwt.InvalidTokenError:
            exp = None
    for key, item in value.items():
        if key == "timestamp" and isinstance(item, str) and RFC3339.match(item):
            out[key] = "<RFC3339>"
        elif key == "token" and isinstance(item, str):
            out[key] = summarise_token(item, public_key)
        elif key == "expired_at" and exp is not None and item == exp:
            out[key] = "<exp>"
        else:
            out[key] = normalise(item, public_key)
    return out


def _scheduling_key(entry: Any) -> str:
    return json.dumps(entry, sort_keys=True)


@dataclass
class Transcript:
    """The requests of one scenario sent to one server, and what came back."""

    url: str
    public_key: str
    steps: List[Tuple[str, int, Dict[str, str], Any]] = field(default_factory=list)
    unordered_scheduling: bool = False  # v1.3.0 lists a Go map's iteration: random order

    def call(self, label: str, method: str, path: str, body: Any = _NO_BODY,
             raw: Optional[bytes] = None, token: Optional[str] = None,
             headers: Optional[Mapping[str, str]] = None,
             only_ids: Optional[Collection[int]] = None) -> Any:
        """Send, record under `label`, and return the decoded body (or the raw bytes).
        `only_ids`: record only the `scheduling` entries of these PIDs/TIDs (other tests'
        processes come and go between the two servers' answers)."""
        answer = request(self.url, method, path, body, raw, token, headers)
        try:
            decoded: Any = answer.json()
        except ValueError:
            decoded = answer.body
        shown = normalise(decoded, self.public_key)
        if isinstance(shown, dict) and isinstance(shown.get("scheduling"), list):
            entries = shown["scheduling"]
            if only_ids is not None:
                entries = [e for e in entries if isinstance(e, dict) and e.get("pid") in only_ids]
            if self.unordered_scheduling:
                entries = sorted(entries, key=_scheduling_key)
            shown["scheduling"] = entries
        self.steps.append((label, answer.status, answer.headers, shown))
        return decoded

    def note(self, label: str, value: Any) -> None:
        """Record something observed outside HTTP (e.g. a filtered listing)."""
        self.steps.append((label, 0, {}, value))

    def token(self, client_id: str = "contract") -> str:
        body = self.call("token", "POST", "/api/v1/auth/token",
                         {"public_key": self.public_key, "client_id": client_id})
        return str(body["data"]["token"])
