"""A test PKI made with python3-cryptography: a client CA, client certificates (good, revoked, expired,
from another CA, with an unmapped name, with a URI SAN) and CRLs.  Used by the client-certificate tests
of both fronts (tests/integration/test_client_certs.py, tests/mysql/test_my_client_certs.py)."""

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_AGENT = "certagent"    # auth: cert, mapped by its subject CN
BOTH_AGENT = "bothagent"    # auth: cert+scram
SPIFFE = "spiffe://clinic.test/agent/uri-agent"
NOW = datetime.datetime.now(datetime.timezone.utc)


def make_key():
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name):
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_client(ca, cn, uri=None, not_before=None, not_after=None):
    ca_key, ca_cert = ca
    key = make_key()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - datetime.timedelta(hours=1))
               .not_valid_after(not_after or NOW + datetime.timedelta(days=7)))
    if uri:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                                        critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_pem(folder, name, cert, key=None):
    cert_path = folder / f"{name}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return cert_path
    key_path = folder / f"{name}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)  # libpq refuses a key others can read
    return cert_path, key_path


class Pki:
    def __init__(self, folder):
        self.folder = Path(folder)
        ca = make_ca("phigate test client CA")
        other = make_ca("some other CA")
        self.ca_file = write_pem(self.folder, "ca", ca[1])
        self.ca = ca
        self.pairs, self.serials = {}, {}
        for name, issuer, cn, kw in [
            ("good", ca, CERT_AGENT, {}),
            ("revoked", ca, CERT_AGENT, {}),
            ("expired", ca, CERT_AGENT, {"not_before": NOW - datetime.timedelta(days=10),
                                         "not_after": NOW - datetime.timedelta(days=1)}),
            ("foreign", other, CERT_AGENT, {}),
            ("unmapped", ca, "somebody-else", {}),
            ("both", ca, BOTH_AGENT, {}),
            ("uri", ca, "no-such-cn", {"uri": SPIFFE}),
        ]:
            key, cert = make_client(issuer, cn, **kw)
            self.pairs[name] = write_pem(self.folder, name, cert, key)
            self.serials[name] = cert.serial_number
        self.crl_file = self.write_crl("crl.pem", ["revoked"])

    def write_crl(self, file_name, revoked_names):
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.ca[1].subject)
                   .last_update(NOW - datetime.timedelta(minutes=10)).next_update(NOW + datetime.timedelta(days=7)))
        for name in revoked_names:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(self.serials[name])
                .revocation_date(NOW - datetime.timedelta(minutes=5)).build())
        path = self.folder / file_name
        path.write_bytes(builder.sign(self.ca[0], hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path

    def ssl_args(self, name):
        cert, key = self.pairs[name]
        return {"sslmode": "require", "sslcert": str(cert), "sslkey": str(key)}
