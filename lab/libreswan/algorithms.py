"""The lab's proposals (strongSwan keywords, as `lab.plan.proposal` writes them) in libreswan's
`ike=` / `esp=` dialect, and what libreswan 4.10 does not implement.

libreswan spells AES-GCM `aes_gcm<bits>` (a 16-byte ICV by default) and elliptic groups `dh19`..;
for an AEAD IKE proposal the second element is the PRF (`aes_gcm256-sha256-dh19`). The rest of
the keywords are the same. What it refused when asked (`algparse`, tests/test_libreswan.py):
MODP768 and MODP1024 (DH1, DH2), DH22-DH24, single DES, any AEAD cipher for an IKEv1 SA, and the
elliptic groups (DH19-21) for PFS in IKEv1 Quick Mode.
"""

from __future__ import annotations

import re

_GCM = re.compile(r"^aes(128|192|256)gcm16$")
_DH = {"ecp256": "dh19", "ecp384": "dh20", "ecp521": "dh21"}
UNSUPPORTED = {
    "modp768": "DH1 (MODP768)", "modp1024": "DH2 (MODP1024)", "modp1024s160": "DH22",
    "modp2048s224": "DH23", "modp2048s256": "DH24", "des": "DES",
}
DH_TOKEN = re.compile(r"^(modp\d+(s\d+)?|ecp\d+)$")


def _token(token: str) -> str:
    if m := _GCM.match(token):
        return f"aes_gcm{m.group(1)}"
    if token.startswith("prf"):
        return token[3:]  # the PRF stands where the integrity would (AEAD IKE proposals)
    return _DH.get(token, token)


def translate(proposal: str) -> str:
    """aes128-sha256-modp2048 -> aes128-sha256-modp2048; aes256gcm16-prfsha256-ecp256 ->
    aes_gcm256-sha256-dh19; an AEAD ESP proposal with PFS, aes128gcm16-modp2048 ->
    aes_gcm128-null-modp2048 (libreswan reads the element after the cipher as integrity)."""
    tokens = proposal.split("-")
    if len(tokens) == 2 and _GCM.match(tokens[0]) and DH_TOKEN.match(tokens[1]):
        tokens.insert(1, "null")
    return "-".join(_token(t) for t in tokens)


def has_dh(proposal: str) -> bool:
    """An ESP proposal with a DH group asks for PFS (libreswan: pfs=yes, the group in esp=)."""
    return any(DH_TOKEN.match(t) for t in proposal.split("-"))


def unsupported(proposal: str, version: int, ike: bool) -> list[str]:
    """What of a proposal libreswan 4.10 does not implement, by the menu's names."""
    tokens = proposal.split("-")
    out = [UNSUPPORTED[t] for t in tokens if t in UNSUPPORTED]
    if ike and version == 1 and any(_GCM.match(t) for t in tokens):
        out.append("AES-GCM for an IKEv1 SA")
    if not ike and version == 1:
        out += [f"{_DH[t].upper()} ({t.upper()}) for PFS in IKEv1 Quick Mode" for t in tokens
                if t in _DH]
    return out
