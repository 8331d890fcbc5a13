"""A small raw-socket MySQL protocol client for the myfront tests: bytes no
driver sends (malformed packets, bad sequence ids, odd capabilities) and
exact control over what is negotiated (CLIENT_DEPRECATE_EOF, TLS, plugins).

Only what the tests need: login with mysql_native_password or
caching_sha2_password (fast scramble, full authentication over TLS), text
result sets, raw commands.  Every sequence id the server sends is checked.
"""

import hashlib
import socket
import ssl
import struct

# Capability flags
LONG_PASSWORD = 1
FOUND_ROWS = 1 << 1
LONG_FLAG = 1 << 2
CONNECT_WITH_DB = 1 << 3
COMPRESS = 1 << 5
LOCAL_FILES = 1 << 7
PROTOCOL_41 = 1 << 9
SSL = 1 << 11
TRANSACTIONS = 1 << 13
SECURE_CONNECTION = 1 << 15
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PS_MULTI_RESULTS = 1 << 18
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
PLUGIN_AUTH_LENENC = 1 << 21
SESSION_TRACK = 1 << 23
DEPRECATE_EOF = 1 << 24
QUERY_ATTRIBUTES = 1 << 27

DEFAULT_CAPS = (LONG_PASSWORD | LONG_FLAG | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | MULTI_RESULTS |
                PS_MULTI_RESULTS | PLUGIN_AUTH | PLUGIN_AUTH_LENENC)

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_FIELD_LIST = 0x01, 0x02, 0x03, 0x04
COM_STATISTICS, COM_PROCESS_KILL, COM_PING, COM_CHANGE_USER = 0x09, 0x0C, 0x0E, 0x11
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_STMT_FETCH = 0x16, 0x17, 0x19, 0x1C
COM_RESET_CONNECTION, COM_BINLOG_DUMP = 0x1F, 0x12

MAX_PACKET = 0xFFFFFF


class MyError(Exception):
    def __init__(self, code, sqlstate, message):
        super().__init__(f"{code} ({sqlstate}): {message}")
        self.code, self.sqlstate, self.message = code, sqlstate, message


class Closed(Exception):
    """The server closed the connection."""


def native_scramble(password, salt):
    if not password:
        return b""
    s1 = hashlib.sha1(password.encode()).digest()
    s2 = hashlib.sha1(s1).digest()
    mix = hashlib.sha1(salt + s2).digest()
    return bytes(a ^ b for a, b in zip(s1, mix))


def sha2_scramble(password, salt):
    if not password:
        return b""
    s1 = hashlib.sha256(password.encode()).digest()
    s2 = hashlib.sha256(s1).digest()
    mix = hashlib.sha256(s2 + salt).digest()
    return bytes(a ^ b for a, b in zip(s1, mix))


def lenenc(n):
    if n < 0xFB:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfc" + struct.pack("<H", n)
    if n <= 0xFFFFFF:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def read_lenenc(p, i):
    b = p[i]
    if b < 0xFB:
        return b, i + 1
    if b == 0xFB:
        return None, i + 1
    if b == 0xFC:
        return struct.unpack_from("<H", p, i + 1)[0], i + 3
    if b == 0xFD:
        return int.from_bytes(p[i + 1:i + 4], "little"), i + 4
    if b == 0xFE:
        return struct.unpack_from("<Q", p, i + 1)[0], i + 9
    raise ValueError("bad lenenc 0xff")


def read_lenenc_str(p, i):
    n, i = read_lenenc(p, i)
    if n is None:
        return None, i
    return p[i:i + n], i + n


def parse_err(p):
    code = struct.unpack_from("<H", p, 1)[0]
    if p[3:4] == b"#":
        return MyError(code, p[4:9].decode(), p[9:].decode(errors="replace"))
    return MyError(code, "HY000", p[3:].decode(errors="replace"))


def parse_ok(p):
    affected, i = read_lenenc(p, 1)
    insert_id, i = read_lenenc(p, i)
    status, warnings = struct.unpack_from("<HH", p, i)
    return {"affected_rows": affected, "insert_id": insert_id, "status": status, "warnings": warnings,
            "info": p[i + 4:]}


def parse_column(p):
    out, i = [], 0
    for _ in range(6):
        s, i = read_lenenc_str(p, i)
        out.append(s.decode() if s is not None else None)
    _, i = read_lenenc(p, i)
    charset, length, ctype, flags, decimals = struct.unpack_from("<HIBHB", p, i)
    return {"schema": out[1], "table": out[2], "org_table": out[3], "name": out[4], "org_name": out[5],
            "type": ctype, "charset": charset}


class MyClient:
    def __init__(self, host, port, timeout=15):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.host = host
        self.caps = 0
        self.greeting = None
        self.next_seq = 0
        self.capture = None

    # -- framing -----------------------------------------------------------
    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read_physical(self):
        h = self._recv_exact(4)
        n = h[0] | h[1] << 8 | h[2] << 16
        p = self._recv_exact(n)
        if self.capture is not None:
            self.capture += h + p  # the bytes as received, for digests
        return h[3], p

    def read_packet(self, check_seq=True):
        """One logical packet (continuations joined).  Ids are checked."""
        payload = bytearray()
        while True:
            seq, p = self.read_physical()
            if check_seq and seq != self.next_seq:
                raise AssertionError(f"server sent sequence id {seq}, expected {self.next_seq}")
            self.next_seq = (seq + 1) % 256
            payload += p
            if len(p) < MAX_PACKET:
                return bytes(payload)

    def send(self, payload, seq=None):
        seq = self.next_seq if seq is None else seq
        while True:
            chunk, payload = payload[:MAX_PACKET], payload[MAX_PACKET:]
            self.sock.sendall(struct.pack("<I", len(chunk))[:3] + bytes([seq % 256]) + chunk)
            seq += 1
            if len(chunk) < MAX_PACKET:
                break
        self.next_seq = seq % 256

    def send_raw(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def closed_by_server(self, timeout=5):
        """True when the server closes the connection (reads until EOF)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, ssl.SSLError):
            return False
        except OSError:
            return True

    # -- login ---------------------------------------------------------------
    def read_greeting(self):
        self.next_seq = 0
        p = self.read_packet()
        if p[0] == 0xFF:
            raise parse_err(p)
        assert p[0] == 10, p[:20]
        i = p.index(b"\0", 1)
        version = p[1:i].decode()
        i += 1
        conn_id = struct.unpack_from("<I", p, i)[0]
        i += 4
        salt1 = p[i:i + 8]
        i += 9
        caps_lo = struct.unpack_from("<H", p, i)[0]
        i += 2
        charset, status, caps_hi, auth_len = struct.unpack_from("<BHHB", p, i)
        i += 6 + 10
        salt2 = p[i:i + max(13, auth_len - 8)].rstrip(b"\0")
        i += max(13, auth_len - 8)
        plugin = p[i:].split(b"\0")[0].decode()
        self.greeting = {"version": version, "connection_id": conn_id, "salt": salt1 + salt2,
                         "caps": caps_lo | caps_hi << 16, "charset": charset, "status": status, "plugin": plugin}
        return self.greeting

    def login(self, user, password, db=None, caps=DEFAULT_CAPS, plugin=None, tls=False, charset=45,
              auth_data=None):
        """Log in; returns the final OK.  plugin: what this client claims to use first
        (default: the server's).  Raises MyError on an ERR."""
        g = self.greeting or self.read_greeting()
        caps |= CONNECT_WITH_DB if db else 0
        if tls:
            caps |= SSL
        self.caps = caps
        if tls:
            self.send(struct.pack("<IIB", caps, 1 << 24, charset) + b"\0" * 23)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock)
        plugin = plugin or g["plugin"]
        self.password = password
        if auth_data is None:
            auth_data = (sha2_scramble(password, g["salt"]) if plugin == "caching_sha2_password"
                         else native_scramble(password, g["salt"]))
        body = struct.pack("<IIB", caps, 1 << 24, charset) + b"\0" * 23 + user.encode() + b"\0"
        body += lenenc(len(auth_data)) + auth_data if caps & PLUGIN_AUTH_LENENC else bytes([len(auth_data)]) + auth_data
        if db:
            body += db.encode() + b"\0"
        if caps & PLUGIN_AUTH:
            body += plugin.encode() + b"\0"
        self.send(body)
        return self._auth_loop(password)

    def _auth_loop(self, password):
        self.auth_trace = []
        while True:
            p = self.read_packet()
            if p[0] == 0x00:
                self.auth_trace.append("ok")
                return parse_ok(p)
            if p[0] == 0xFF:
                self.auth_trace.append("err")
                raise parse_err(p)
            if p[0] == 0xFE:
                i = p.index(b"\0", 1)
                plugin = p[1:i].decode()
                salt = p[i + 1:].rstrip(b"\0")
                self.auth_trace.append("switch:" + plugin)
                data = (sha2_scramble(password, salt) if plugin == "caching_sha2_password"
                        else native_scramble(password, salt))
                self.send(data)
                continue
            if p[0] == 0x01:
                self.auth_trace.append(f"more:{p[1:].hex()}")
                if p[1:] == b"\x04":
                    if isinstance(self.sock, ssl.SSLSocket):
                        self.send(password.encode() + b"\0")
                    else:
                        self.send(b"\x02")  # ask for the RSA key, as clients do
                continue
            raise AssertionError(f"unexpected login packet {p[:16].hex()}")

    # -- commands --------------------------------------------------------------
    def command(self, cmd, payload=b""):
        self.next_seq = 0
        self.send(bytes([cmd]) + payload)

    def query(self, sql):
        """Results of a text query: a list of {"columns", "rows"} or OK dicts.  Raises MyError."""
        self.command(COM_QUERY, sql.encode() if isinstance(sql, str) else sql)
        return self.read_results()

    def read_results(self, binary=False):
        """binary: rows of COM_STMT_EXECUTE are returned as raw payloads."""
        deprecate = bool(self.caps & DEPRECATE_EOF)
        results = []
        while True:
            p = self.read_packet()
            if p[0] == 0xFF:
                raise parse_err(p)
            if p[0] == 0x00:
                ok = parse_ok(p)
                results.append(ok)
                if ok["status"] & 0x08:
                    continue
                return results
            if p[0] == 0xFB:
                raise AssertionError("server asked for a LOCAL INFILE")
            ncols, _ = read_lenenc(p, 0)
            cols = [parse_column(self.read_packet()) for _ in range(ncols)]
            if not deprecate:
                eof = self.read_packet()
                assert eof[0] == 0xFE and len(eof) < 9, eof.hex()
            rows = []
            while True:
                p = self.read_packet()
                if p[0] == 0xFF:
                    raise parse_err(p)
                if p[0] == 0xFE and (len(p) < MAX_PACKET if deprecate else len(p) < 9):
                    status = parse_ok(p)["status"] if deprecate else struct.unpack_from("<HH", p, 1)[1]
                    break
                if binary:
                    rows.append(p)
                    continue
                row, i = [], 0
                for _ in range(ncols):
                    v, i = read_lenenc_str(p, i)
                    row.append(v)
                assert i == len(p), "row longer than its columns"
                rows.append(tuple(row))
            results.append({"columns": cols, "rows": rows, "status": status})
            if not status & 0x08:
                return results

    def prepare(self, sql):
        """COM_STMT_PREPARE: (statement id, columns, params).  Raises MyError."""
        self.command(COM_STMT_PREPARE, sql.encode())
        p = self.read_packet()
        if p[0] == 0xFF:
            raise parse_err(p)
        stmt_id, ncols, nparams = struct.unpack_from("<IHH", p, 1)
        classic = not self.caps & DEPRECATE_EOF
        for count in (nparams, ncols):
            for _ in range(count):
                self.read_packet()
            if count and classic:
                assert self.read_packet()[0] == 0xFE
        return stmt_id, ncols, nparams

    def simple(self, cmd, payload=b""):
        """A command answered by one OK / EOF / ERR packet; returns the payload."""
        self.command(cmd, payload)
        p = self.read_packet()
        if p[0] == 0xFF:
            raise parse_err(p)
        return p
