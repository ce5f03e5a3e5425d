"""wsd_smb: a sans-IO SMB2/3 server core (MS-SMB2) with an asyncio driver.

Layout:
  wire/      declarative wire structures (one definition per structure, MS-SMB2 2.2.x)
  ntstatus   NTSTATUS codes as an exception registry (MS-ERREF 2.3)
  auth/      NTLM (MS-NLMP) acceptor and a minimal SPNEGO (RFC 4178) DER codec
  crypto/    SP800-108 KDF, SMB2 signing and encryption (MS-SMB2 3.1.4)
  core/      the sans-IO connection/session state machine and the dispatch table
  server/    the asyncio driver, configuration, the control socket and the `wsd-smbd` program
  admin/     the control-socket protocol (sans-IO) and the status report `wsd-smbstatus` shows
"""
