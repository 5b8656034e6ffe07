"""A Gthulhu-compatible API server for tests, the demo and the benchmarks.

Implements Gthulhu's 2025 API as the project's reference notes describe it (2025-10-30
release, with the later token shape selectable): RS256 tokens of a chosen
lifetime, Bearer checks, the strategies list replaced on each POST, `null`
when empty.  Faults can be switched on at run time (`server.fault = ...`) for
the failure tests.  Everything it received is recorded with timestamps.

Run it alone:  python3 -m testbed.fake_gthulhu --port 8080 --key-dir DIR
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.fake_http import FakeServerBase, FakeServerHandler

# Go's pem.Decode finds "-----BEGIN " only at the start or after a newline: a key file
# that starts with a byte order mark is no PEM to the real servers (401).
_PEM_BLOCK = re.compile(rb"(?:\A|\n)-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
                        re.S)


def pkix_rsa_public_key(pem: str) -> Optional[rsa.RSAPublicKey]:
    """util.PEMToRSAPublicKey: the first PEM block must be a PKIX "PUBLIC KEY" holding an
    RSA key; PKCS#1 ("RSA PUBLIC KEY"), other key types and garbage give None."""
    match = _PEM_BLOCK.search(pem.encode("utf-8", errors="replace"))
    if match is None or match.group(1) != b"PUBLIC KEY":
        return None
    try:
        key = serialization.load_der_public_key(base64.b64decode(match.group(2)))
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


def make_keypair(directory: Path) -> Tuple[Path, Path]:
    """Write private.pem and public.pem (PKIX) into directory."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "jwt_private_key.pem"
    public = directory / "jwt_public_key.pem"
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    private.chmod(0o600)
    public.chmod(0o644)
    return private, public


@dataclass
class Received:
    at: float  # time.monotonic() at receipt
    method: str
    path: str
    body: Any
    authorization: str


class FakeGthulhu(FakeServerBase):
    def __init__(self, private_key_pem: bytes, token_lifetime: float = 3600.0,
                 token_shape: str = "2025", priority_type: type = bool,
                 host: str = "127.0.0.1", port: int = 0,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self._public_pem = self._key.public_key().public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.token_lifetime = token_lifetime
        self.token_shape = token_shape
        self.priority_type = priority_type
        self.strategies: Optional[List[Dict[str, Any]]] = None
        self.tokens_issued = 0
        self.min_jti = 0  # tokens with a lower serial are rejected (see revoke_tokens)
        self.selector_pids: List[int] = []  # what selector strategies "match" on GET
        # fault "redirect": this status and Location ("" = no Location header)
        self.redirect_status = 302
        self.redirect_location = "http://127.0.0.1:9/elsewhere"
        # This server's clock minus the real one, in seconds: applied to the tokens'
        # iat/nbf/exp (and expired_at), and to its own check of the tokens it gets.
        self.clock_skew = 0.0
        # Sign tokens with this private key (PEM) instead of the server's own, as a
        # server whose JWT key is not the pair of the public key it accepts would.
        self.signing_key_pem: Optional[bytes] = None
        super().__init__(_make_handler(self), host, port, tls)

    def start(self) -> FakeGthulhu:
        self._start()
        return self

    # --- observations --------------------------------------------------------

    def posts(self) -> List[Received]:
        with self._cond:
            return [r for r in self.received if r.method == "POST" and r.path.endswith(
                "/strategies")]

    def wait_post(self, predicate: Callable[[List[Dict[str, Any]]], bool], timeout: float = 5.0,
                  after: int = 0) -> Received:
        """The first strategies POST (index >= after) whose list satisfies predicate."""
        def find() -> Optional[Received]:
            for r in self.posts()[after:]:
                if predicate(r.body["strategies"]):
                    return r
            return None
        return self.wait_for(find, timeout)  # type: ignore[no-any-return]

    # --- behaviour ------------------------------------------------------------

    def issue_token(self) -> Tuple[str, int]:
        now = int(time.time() + self.clock_skew)  # this server's (possibly wrong) clock
        exp = now + int(self.token_lifetime)
        claims = {"client_id": "gtp5g-operator", "iss": "bss-api-server", "sub": "client",
                  "iat": now, "nbf": now, "exp": exp, "jti": str(self.tokens_issued)}
        self.tokens_issued += 1
        key: Any = self._key
        if self.signing_key_pem is not None:
            key = serialization.load_pem_private_key(self.signing_key_pem, password=None)
        return jwt.encode(claims, key, algorithm="RS256"), exp

    def public_key_matches(self, pem: str) -> bool:
        key = pkix_rsa_public_key(pem)  # Go's x509.ParsePKIXPublicKey, as upstream
        if key is None:
            return False
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo
                                ) == self._public_pem

    def token_ok(self, header: str) -> bool:
        if not header.startswith("Bearer "):
            return False
        try:
            # judged on this server's clock: a skew is a leeway around the real one
            claims = jwt.decode(header[7:], self._public_pem, algorithms=["RS256"],
                                leeway=abs(self.clock_skew))
        except jwt.InvalidTokenError:
            return False
        return int(claims.get("jti", 0)) >= self.min_jti

    def expanded(self) -> List[Dict[str, Any]]:
        """The list as GET returns it: selector strategies once per matching PID."""
        out: List[Dict[str, Any]] = []
        for s in self.strategies or []:
            if s.get("selectors"):
                out += [{**s, "pid": pid} for pid in self.selector_pids]
            else:
                out.append(s)
        return out

    def revoke_tokens(self) -> None:
        """Make every token issued so far invalid (as a restarted server with a new key
        configuration would): the next protected call gets a 401."""
        self.min_jti = self.tokens_issued


def _make_handler(api: FakeGthulhu) -> type:
    class Handler(FakeServerHandler):
        error_messages: ClassVar[Dict[int, str]] = {
            500: "internal error", 400: "Invalid request payload",
            401: "Public key verification failed"}

        def _send(self, status: int, body: Any, raw: Optional[bytes] = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error_answer(self, status: int, message: str) -> None:
            self._send(status, {"success": False, "error": message})

        def raw_answer(self, status: int, data: bytes) -> None:
            self._send(status, None, raw=data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return ValueError

        def _fault(self) -> bool:
            """Apply a configured fault; True if the request was answered by it."""
            fault = api.fault_now()
            if fault is None:
                return False
            if fault == "redirect":  # a 3xx with a Location (e.g. an http -> https move)
                self.send_response(api.redirect_status)
                if api.redirect_location:
                    self.send_header("Location", api.redirect_location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            return self.play_fault(fault)

        def do_GET(self) -> None:
            api.record(Received(time.monotonic(), "GET", self.path, None,
                                self.headers.get("Authorization", "")))
            if self._fault():
                return
            if self.path == "/health":
                self._send(200, {"status": "healthy", "timestamp": time.time(),
                                 "service": "BSS Metrics API Server"})
            elif self.path == "/api/v1/scheduling/strategies":
                if not api.token_ok(self.headers.get("Authorization", "")):
                    self._send(401, {"success": False, "error": "Invalid or expired token"})
                    return
                self._send(200, {"success": True, "message": "Scheduling strategies retrieved",
                                 "timestamp": time.time(),
                                 "scheduling": api.expanded() or None})
            else:
                self._send(404, {"success": False, "error": "not found"})

        def do_POST(self) -> None:
            body = self._body()
            api.record(Received(time.monotonic(), "POST", self.path, body,
                                self.headers.get("Authorization", "")))
            if self._fault():
                return
            if body is ValueError:
                self._send(400, {"success": False, "error": "Invalid JSON format"})
            elif self.path == "/api/v1/auth/token":
                self._token(body)
            elif self.path == "/api/v1/scheduling/strategies":
                self._strategies(body)
            else:
                self._send(404, {"success": False, "error": "not found"})

        def _token(self, body: Any) -> None:
            pem = body.get("public_key") if isinstance(body, dict) else None
            if not isinstance(pem, str) or not api.public_key_matches(pem):
                self._send(401, {"success": False,
                                 "error": "Public key verification failed: key mismatch"})
                return
            token, exp = api.issue_token()
            if api.token_shape == "2025":
                self._send(200, {"success": True, "message": "Token generated successfully",
                                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 "token": token})
            else:
                self._send(200, {"success": True, "data": {"token": token, "expired_at": exp}})

        def _strategies(self, body: Any) -> None:
            if not api.token_ok(self.headers.get("Authorization", "")):
                self._send(401, {"success": False, "error": "Invalid or expired token"})
                return
            items = body.get("strategies") if isinstance(body, dict) else None
            ok = isinstance(items, list) and all(
                isinstance(i, dict)
                and (isinstance(i.get("pid"), int) or isinstance(i.get("selectors"), list))
                and type(i.get("priority")) is api.priority_type
                and isinstance(i.get("execution_time"), int) for i in items)
            if not ok:
                self._send(400, {"success": False, "error": "Invalid request payload: json: "
                                 "cannot unmarshal"})
                return
            # like the real server: entries with neither a PID nor selectors are dropped
            api.strategies = [i for i in items  # type: ignore[union-attr]
                              if i.get("pid") or i.get("selectors")]
            self._send(200, {"success": True,
                             "message": "Scheduling strategies saved successfully",
                             "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ")})

    Handler.api = api
    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--key-dir", required=True, type=Path,
                    help="holds jwt_private_key.pem (made, with its public key, if missing)")
    ap.add_argument("--token-lifetime", type=float, default=3600.0)
    ap.add_argument("--log-posts", action="store_true", help="print each strategies POST")
    a = ap.parse_args()
    private = a.key_dir / "jwt_private_key.pem"
    if not private.exists():
        make_keypair(a.key_dir)
    api = FakeGthulhu(private.read_bytes(), a.token_lifetime, host=a.host, port=a.port).start()
    print(f"fake Gthulhu API on {api.url}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            posts = api.posts()
            if a.log_posts:
                for r in posts[seen:]:
                    print(json.dumps({"at": time.time(), **r.body}), flush=True)
            seen = len(posts)
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
