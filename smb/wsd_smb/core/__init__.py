"""The sans-IO SMB2 server core: connection/session state machine and dispatch table."""
