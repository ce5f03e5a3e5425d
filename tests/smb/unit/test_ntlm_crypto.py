"""NTLM (MS-NLMP 4.2.1 / 4.2.4 test vectors), SPNEGO codec, SMB2 KDF/signing/encryption.

The NTLM numbers are the ones MS-NLMP 4.2 prints: user "User", domain "Domain",
password "Password", server challenge 0123456789abcdef, client challenge aa*8, time 0,
RandomSessionKey 55*16."""
from __future__ import annotations

import os
import struct

import pytest

from wsd_smb.auth import spnego
from wsd_smb.auth.md4 import md4, rc4
from wsd_smb.auth.ntlm import Credential, NtlmAcceptor, NtlmError, ntowfv2
from wsd_smb.crypto import smbcrypto as cr

NT_HASH = bytes.fromhex("a4f49c406510bdcab6824ee7c30fd852")  # MS-NLMP 4.2.2.1.2 NTOWFv1("Password")
SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")
# MS-NLMP 4.2.4.3: the AUTHENTICATE_MESSAGE of the NTLMv2 example
AUTH_4243 = bytes.fromhex(
    "4e544c4d535350000300000018001800"
    "6c00000054005400840000000c000c00"
    "48000000080008005400000010001000"
    "5c00000010001000d8000000358288e2"
    "0501280a0000000f44006f006d006100"
    "69006e00550073006500720043004f00"
    "4d0050005500540045005200" "86c35097"
    "ac9cec102554764a57cccc19aaaaaaaa"
    "aaaaaaaa68cd0ab851e51c96aabc927b"
    "ebef6a1c010100000000000000000000"
    "00000000aaaaaaaaaaaaaaaa00000000"
    "02000c0044006f006d00610069006e00"
    "01000c00530065007200760065007200"
    "0000000000000000c5dad2544fc97990"
    "94ce1ce90bc9d03e")


def test_md4_and_nt_hash_vectors():
    assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"  # RFC 1320 A.5
    assert md4(b"message digest").hex() == "d9130a8164549fe818874806e1c7014b"
    assert md4("Password".encode("utf-16-le")) == NT_HASH
    assert rc4(b"Key", b"Plaintext").hex() == "bbf316e8d940af0ad3"


def test_ntowfv2_vector():
    assert ntowfv2(NT_HASH, "User", "Domain").hex() == "0c868a403bfd7a93a3001ef22ef02e3f"  # 4.2.4.1.1


def _acceptor(**kw):
    a = NtlmAcceptor(lambda name: Credential("User", NT_HASH) if name.lower() == "user" else None,
                     challenge=SERVER_CHALLENGE, **kw)
    # a NEGOTIATE_MESSAGE with the 4.2.4 flags
    a.challenge(b"NTLMSSP\0" + struct.pack("<I", 1) + struct.pack("<I", 0xE2888235) + b"\0" * 16)
    return a


def test_ntlmv2_authenticate_message_from_ms_nlmp_4_2_4_3():
    a = _acceptor()
    a.authenticate(AUTH_4243)
    assert a.complete and a.user_name == "User" and a.domain_name_client == "Domain"
    assert a.workstation == "COMPUTER"
    # KEY_EXCH: ExportedSessionKey = RC4(SessionBaseKey 8de40cca..., c5dad254...) = RandomSessionKey
    assert a.session_key == b"\x55" * 16


def test_ntlmv2_proof_over_blob_as_received():
    """A blob without the 4 trailing zero bytes (what impacket sends) is verified over the
    bytes received, not a re-packed blob."""
    nt_off = struct.unpack_from("<I", AUTH_4243, 24)[0]
    nt_len = struct.unpack_from("<H", AUTH_4243, 20)[0]
    blob = AUTH_4243[nt_off + 16 : nt_off + nt_len - 4]  # drop the trailing padding
    import hashlib
    import hmac
    k = ntowfv2(NT_HASH, "User", "Domain")
    proof = hmac.new(k, SERVER_CHALLENGE + blob, hashlib.md5).digest()
    nt = proof + blob
    payload_user = "User".encode("utf-16-le")
    dom = "Domain".encode("utf-16-le")
    hdr = 64
    msg = (b"NTLMSSP\0" + struct.pack("<I", 3)
           + struct.pack("<HHI", 0, 0, hdr)
           + struct.pack("<HHI", len(nt), len(nt), hdr)
           + struct.pack("<HHI", len(dom), len(dom), hdr + len(nt))
           + struct.pack("<HHI", len(payload_user), len(payload_user), hdr + len(nt) + len(dom))
           + struct.pack("<HHI", 0, 0, hdr)
           + struct.pack("<HHI", 0, 0, hdr)
           + struct.pack("<I", 0x00088201) + nt + dom + payload_user)
    a = _acceptor()
    a.authenticate(msg)
    assert a.complete
    session_base_key = hmac.new(k, proof, hashlib.md5).digest()
    assert a.session_key == session_base_key  # no KEY_EXCH: ExportedSessionKey = KeyExchangeKey


def test_ntlm_wrong_password_and_tampering_rejected():
    a = NtlmAcceptor(lambda n: Credential("User", md4("other".encode("utf-16-le"))), challenge=SERVER_CHALLENGE)
    a.challenge(b"NTLMSSP\0" + struct.pack("<II", 1, 0xE2888235) + b"\0" * 16)
    with pytest.raises(NtlmError):
        a.authenticate(AUTH_4243)
    bad = bytearray(AUTH_4243)
    bad[0x84 + 40] ^= 1  # flip a bit of the client challenge inside the blob
    with pytest.raises(NtlmError):
        _acceptor().authenticate(bytes(bad))
    with pytest.raises(NtlmError):
        _acceptor().authenticate(AUTH_4243[:40])  # truncated
    with pytest.raises(NtlmError):
        NtlmAcceptor(lambda n: None).authenticate(AUTH_4243)  # no CHALLENGE sent


def test_ntlm_challenge_message_layout():
    a = NtlmAcceptor(lambda n: None, server_name="srv", domain_name="wg", challenge=SERVER_CHALLENGE, now=0)
    msg = a.challenge(b"NTLMSSP\0" + struct.pack("<II", 1, 0xE2888235) + b"\0" * 16)
    assert msg[:12] == b"NTLMSSP\0\x02\0\0\0"
    tlen, _, toff = struct.unpack_from("<HHI", msg, 12)
    assert msg[toff:toff + tlen] == "SRV".encode("utf-16-le")
    assert msg[24:32] == SERVER_CHALLENGE
    flags = struct.unpack_from("<I", msg, 20)[0]
    assert flags & 0x00800000 and flags & 0x00020000 and flags & 0x00080000  # TARGET_INFO, SERVER, ESS


def test_spnego_der_roundtrip_and_rejects_garbage():
    init = spnego.neg_token_init_server()
    assert init[0] == 0x60 and spnego.OID_NTLMSSP in init
    resp = spnego.neg_token_resp(1, supported_mech=spnego.OID_NTLMSSP, response_token=b"x" * 300)
    tok = spnego.parse_client_token(resp)
    assert tok.mech_token == b"x" * 300 and not tok.is_init
    for bad in (b"", b"\x60", b"\x60\x85\xff\xff\xff\xff\xff", b"\xa1\x03\x30\x05", b"\x30\x00"):
        with pytest.raises(spnego.SpnegoError):
            spnego.parse_client_token(bad)


def test_kdf_matches_smbprotocol_and_sp800_108_shape():
    from smbprotocol.session import Session as SpSession

    sp = SpSession.__new__(SpSession)
    key = bytes(range(16))
    for label, ctx in ((b"SMB2AESCMAC\0", b"SmbSign\0"), (b"SMBSigningKey\0", b"\x11" * 64)):
        assert cr.kdf(key, label, ctx) == sp._smb3kdf(key, label, ctx)
    assert cr.kdf(key, b"SMBC2SCipherKey\0", b"\x22" * 64, 32) == sp._smb3kdf(key, b"SMBC2SCipherKey\0", b"\x22" * 64,
                                                                             length=32)
    k30 = cr.derive_session_keys(key, 0x0300)
    assert k30.encryption_key == cr.kdf(key, b"SMB2AESCCM\0", b"ServerOut\0")
    assert k30.decryption_key == cr.kdf(key, b"SMB2AESCCM\0", b"ServerIn \0")


def _msg(flags=1, command=8, mid=5):
    return (b"\xfeSMB" + struct.pack("<HHIHHIIQQQ", 64, 1, 0, command, 1, flags, 0, mid, 0, 0x1234) + b"\0" * 16
            + b"body bytes")


@pytest.mark.parametrize("alg", [cr.HMAC_SHA256, cr.AES_CMAC, cr.AES_GMAC])
def test_signing_roundtrip_and_tamper(alg):
    key = bytes(range(16))
    signed = cr.sign(key, _msg(), alg)
    assert signed[16] & 0x08 and cr.verify_signature(key, signed, alg)
    tampered = signed[:-1] + b"X"
    assert not cr.verify_signature(key, tampered, alg)
    if alg == cr.AES_GMAC:
        # the nonce binds MessageId and the response/CANCEL role bits
        other = cr.sign(key, _msg(mid=6), alg)
        assert other[48:64] != signed[48:64]


@pytest.mark.parametrize("alg", [cr.HMAC_SHA256, cr.AES_CMAC, cr.AES_GMAC])
@pytest.mark.parametrize("command", [8, 0x000C])  # READ, and CANCEL (its own GMAC role bit)
def test_verify_signature_in_place_matches_sign(alg, command):
    """verify_signature MACs the message in place (no copy of an 8 MiB WRITE); it must agree
    with sign() for every algorithm, buffer type and size, and still catch a flipped bit."""
    key = bytes(range(16, 32))
    big = _msg(command=command) + os.urandom(3 << 20)
    for msg in (_msg(command=command), big):
        signed = cr.sign(key, msg, alg)
        for form in (bytes(signed), bytearray(signed), memoryview(bytearray(signed))):
            assert cr.verify_signature(key, form, alg)
        bad = bytearray(signed)
        bad[len(bad) // 2] ^= 1
        assert not cr.verify_signature(key, bad, alg)
    assert not cr.verify_signature(key, b"\xfeSMB", alg)  # shorter than a header: refused, no exception


def test_signing_matches_smbprotocol():
    """smbprotocol's client signer is an independent implementation."""
    from smbprotocol.connection import Connection as SpConn
    from smbprotocol.header import Commands

    key = bytes(range(16))
    c = SpConn.__new__(SpConn)
    for dialect, alg in ((0x0210, cr.HMAC_SHA256), (0x0302, cr.AES_CMAC), (0x0311, cr.AES_GMAC)):
        c.dialect = dialect
        c.signing_algorithm_id = {cr.HMAC_SHA256: None, cr.AES_CMAC: 1, cr.AES_GMAC: 2}[alg]
        msg = bytearray(_msg())
        struct.pack_into("<I", msg, 16, 1 | 8)
        ours = cr.sign(key, bytes(msg), alg)[48:64]
        theirs = c._generate_signature(bytes(msg), key, 5, True, Commands.SMB2_READ)
        assert ours == theirs, hex(dialect)


@pytest.mark.parametrize("cipher", [cr.AES_128_CCM, cr.AES_128_GCM, cr.AES_256_CCM, cr.AES_256_GCM])
def test_encryption_roundtrip_and_tamper(cipher):
    key = bytes(range(cr.CIPHER_KEY_SIZE[cipher]))
    plain = _msg()
    t = cr.encrypt_message(key, 0x1234, plain, cipher)
    assert t[:4] == b"\xfdSMB" and struct.unpack_from("<I", t, 36)[0] == len(plain)
    assert cr.decrypt_message(key, t, cipher) == plain
    for pos in (4, 25, 50, len(t) - 1):  # signature, nonce, session id (AAD), ciphertext
        bad = bytearray(t)
        bad[pos] ^= 1
        with pytest.raises(cr.DecryptError):
            cr.decrypt_message(key, bytes(bad), cipher)


def test_preauth_hash_chain():
    import hashlib
    assert cr.preauth_hash(b"\0" * 64, b"abc") == hashlib.sha512(b"\0" * 64 + b"abc").digest()
