"""A tiny PostgreSQL v3 wire client on a raw socket, for tests that must send
bytes no driver would send (oversized headers, FunctionCall, garbage startup
packets) and see exactly what phigate answers.

Only what the tests need: StartupMessage, SCRAM-SHA-256 login, simple Query,
reading messages, and ErrorResponse fields.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct

PROTOCOL_3_0 = 196608


class PeerClosed(Exception):
    """The server closed the connection."""


class ServerError(Exception):
    """An ErrorResponse arrived; .fields maps field codes ('C', 'M', ...) to text."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S')} {fields.get('C')}: {fields.get('M')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


def parse_error_fields(body):
    """ErrorResponse/NoticeResponse body -> {code: text}."""
    fields = {}
    for part in body.rstrip(b"\0").split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def startup_packet(params, protocol=PROTOCOL_3_0):
    body = struct.pack("!I", protocol)
    for name, value in params.items():
        body += name.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(type_byte, body=b""):
    return type_byte + struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


class RawClient:
    """One TCP connection speaking the protocol by hand."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    @classmethod
    def over(cls, sock):
        """A client on an already connected socket (e.g. one wrapped in TLS)."""
        c = cls.__new__(cls)
        c.sock, c.buf = sock, b""
        return c

    # -- bytes ---------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PeerClosed(f"connection closed with {len(self.buf)} bytes pending")
            self.buf += chunk

    def read_exact(self, n):
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_message(self):
        """Next (type, body) from the server."""
        head = self.read_exact(5)
        length = struct.unpack("!I", head[1:5])[0]
        return head[0:1], self.read_exact(length - 4)

    def wait_closed(self, timeout=5.0):
        """True if the server closes the connection within timeout (pending bytes discarded)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- protocol ------------------------------------------------------------
    def read_until_ready(self):
        """Messages up to and including ReadyForQuery; raises ServerError on an ErrorResponse
        only if raise_errors is set by the caller (see query())."""
        msgs = []
        while True:
            t, body = self.read_message()
            msgs.append((t, body))
            if t == b"Z":
                return msgs

    def query(self, sql):
        """Simple Query: returns every message up to ReadyForQuery."""
        self.send(query_message(sql))
        return self.read_until_ready()

    def login(self, user, password, database, extra_params=None, pipelined=b""):
        """StartupMessage + SCRAM-SHA-256; returns the messages after AuthenticationOk
        up to ReadyForQuery.  Raises ServerError if the server sends an ErrorResponse.
        pipelined: bytes sent in the same write as the last SASL message, before the
        server has said AuthenticationOk."""
        params = {"user": user, "database": database}
        params.update(extra_params or {})
        self.send(startup_packet(params))
        scram = None
        after_ok = []
        authenticated = False
        while True:
            t, body = self.read_message()
            if t == b"E":
                raise ServerError(parse_error_fields(body))
            if authenticated:
                after_ok.append((t, body))
                if t == b"Z":
                    return after_ok
                continue
            if t == b"v":  # NegotiateProtocolVersion
                continue
            if t != b"R":
                raise AssertionError(f"unexpected message {t!r} during authentication")
            code = struct.unpack("!I", body[:4])[0]
            if code == 10:  # AuthenticationSASL
                mechs = [m.decode() for m in body[4:].split(b"\0") if m]
                assert "SCRAM-SHA-256" in mechs, mechs
                scram = ScramClient(password)
                first = scram.client_first().encode()
                self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            elif code == 11:  # SASLContinue
                self.send(message(b"p", scram.client_final(body[4:].decode()).encode()) + pipelined)
            elif code == 12:  # SASLFinal
                scram.verify_server_final(body[4:].decode())
            elif code == 0:  # AuthenticationOk
                authenticated = True
            else:
                raise AssertionError(f"unsupported authentication request {code}")


def rows_of(msgs):
    """DataRow values (text) from a list of messages."""
    rows = []
    for t, body in msgs:
        if t != b"D":
            continue
        n = struct.unpack("!H", body[:2])[0]
        pos, row = 2, []
        for _ in range(n):
            ln = struct.unpack("!i", body[pos:pos + 4])[0]
            pos += 4
            if ln < 0:
                row.append(None)
            else:
                row.append(body[pos:pos + ln].decode())
                pos += ln
        rows.append(tuple(row))
    return rows


def errors_of(msgs):
    return [parse_error_fields(body) for t, body in msgs if t == b"E"]


class ScramClient:
    """SCRAM-SHA-256 (RFC 5802/7677) client side, without channel binding."""

    GS2 = "n,,"

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return self.GS2 + self.first_bare

    def client_final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), "server nonce does not extend ours"
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(self.GS2.encode()).decode()},r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.salted = salted
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify_server_final(self, server_final):
        server_key = hmac.new(self.salted, b"Server Key", hashlib.sha256).digest()
        expected = hmac.new(server_key, self.auth_message, hashlib.sha256).digest()
        assert server_final == "v=" + base64.b64encode(expected).decode(), "bad server signature"
