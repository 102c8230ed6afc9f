"""The server half of Telegram's SRP 2FA check (2048-bit group, g = 3).
Only the verifier g^x is stored; the client's KDF is Telethon's own, so the math must agree with a real client."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from telethon import password as telethon_password
from telethon.tl import types

# Telegram's published 2048-bit safe prime (the one Telethon and the official apps accept without
# factorising it; any other prime would make the client run a very slow primality check).
PRIME = bytes.fromhex(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f"
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37"
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4"
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754"
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f"
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b"
)
G = 3
_P = int.from_bytes(PRIME, "big")
_SIZE = 256


def _sha256(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _pad(number: int) -> bytes:
    return number.to_bytes(_SIZE, "big")


# k = H(p | g), fixed for the group.
_K = int.from_bytes(_sha256(PRIME, _pad(G)), "big")


@dataclass(frozen=True, slots=True)
class PasswordVerifier:
    """What the server keeps for a 2FA password: the KDF salts and v = g^x mod p, never the password."""

    salt1: bytes
    salt2: bytes
    verifier: bytes

    def algo(self) -> types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow:
        return types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=self.salt1, salt2=self.salt2, g=G, p=PRIME
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    """One `account.getPassword` answer: the server secret b and the public B sent to the client."""

    b: int
    srp_b: bytes


def make_verifier(password: str) -> PasswordVerifier:
    """Derive v from a new password with fresh salts (about 0.1 s: the KDF is PBKDF2 with 100,000 rounds)."""
    verifier = PasswordVerifier(salt1=os.urandom(40), salt2=os.urandom(16), verifier=b"")
    x = int.from_bytes(telethon_password.compute_hash(verifier.algo(), password), "big")
    return PasswordVerifier(verifier.salt1, verifier.salt2, _pad(pow(G, x, _P)))


def new_challenge(verifier: PasswordVerifier) -> Challenge:
    """B = k*v + g^b mod p, with b drawn until g^b passes the size checks the client applies to it."""
    v = int.from_bytes(verifier.verifier, "big")
    while True:
        b = int.from_bytes(os.urandom(_SIZE), "big")
        g_b = pow(G, b, _P)
        srp_b = (_K * v + g_b) % _P
        if telethon_password.is_good_mod_exp_first(g_b, _P) and telethon_password.is_good_large(srp_b, _P):
            return Challenge(b=b, srp_b=_pad(srp_b))


def check(verifier: PasswordVerifier, challenge: Challenge, srp_a: bytes, m1: bytes) -> bool:
    """True when the client proved knowledge of the password: M1 matches the one computed from S = (A * v^u)^b."""
    a = int.from_bytes(srp_a, "big")
    if not 0 < a < _P:
        return False
    v = int.from_bytes(verifier.verifier, "big")
    u = int.from_bytes(_sha256(_pad(a), challenge.srp_b), "big")
    s = pow(a * pow(v, u, _P) % _P, challenge.b, _P)
    k = _sha256(_pad(s))
    h_p, h_g = _sha256(PRIME), _sha256(_pad(G))
    expected = _sha256(
        bytes(x ^ y for x, y in zip(h_p, h_g)),
        _sha256(verifier.salt1),
        _sha256(verifier.salt2),
        _pad(a),
        challenge.srp_b,
        k,
    )
    return hmac.compare_digest(expected, m1)
