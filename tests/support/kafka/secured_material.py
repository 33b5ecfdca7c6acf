"""Certificates and SCRAM users for the secured (SASL_SSL) Apache Kafka of tests/support/kafka/apache_kafka.sh, made
here with `cryptography`, so that no key or password is ever checked in and each run has fresh ones.

    python3 tests/support/kafka/secured_material.py DIR

writes into DIR/tls: `ca.pem` (the CA the clients trust), `server.pem` (the broker's PKCS#8 key and certificate,
SAN 127.0.0.1 and localhost, the PEM keystore Kafka reads), `client-cert.pem`/`client-key.pem` (a client
certificate signed by that CA), `rogue-ca.pem` (a CA that signed nothing here: trusting it must fail the TLS
handshake), and DIR/users: one `MECHANISM NAME PASSWORD` line per SCRAM user for `kafka-storage format
--add-scram`, and DIR/client.json: the WARDEN_KAFKA_* settings a client of this broker needs (the password in a
file beside it, as a mounted Secret would be).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USER = "warden"
MECHANISM = "SCRAM-SHA-512"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, common: str, *, server: bool
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(directory: Path) -> dict[str, str]:
    """Write the material into `directory`; return the client's settings (also in client.json)."""
    tls = directory / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("warden test CA")
    server_key, server = _leaf(ca_key, ca, "127.0.0.1", server=True)
    client_key, client = _leaf(ca_key, ca, "warden-client", server=False)
    _, rogue = _ca("a CA nobody trusts")
    (tls / "ca.pem").write_bytes(_pem(ca))
    (tls / "rogue-ca.pem").write_bytes(_pem(rogue))
    (tls / "server.pem").write_bytes(_key_pem(server_key) + _pem(server) + _pem(ca))
    (tls / "client-cert.pem").write_bytes(_pem(client))
    (tls / "client-key.pem").write_bytes(_key_pem(client_key))
    password = secrets.token_urlsafe(24)
    (directory / "users").write_text(f"{MECHANISM} {USER} {password}\n")
    secret = directory / "kafka-password"
    secret.write_text(password + "\n")  # a mounted Secret usually ends with a newline: the reader strips it
    client_settings = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": MECHANISM,
        "kafka_sasl_username": USER,
        "kafka_sasl_password_file": str(secret),
        "kafka_ssl_cafile": str(tls / "ca.pem"),
    }
    (directory / "client.json").write_text(json.dumps(client_settings, indent=2) + "\n")
    return client_settings


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    make(Path(sys.argv[1]))
