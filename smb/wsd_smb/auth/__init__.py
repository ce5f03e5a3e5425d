"""Authentication: NTLM acceptor (MS-NLMP) and a minimal SPNEGO (RFC 4178) DER codec."""
