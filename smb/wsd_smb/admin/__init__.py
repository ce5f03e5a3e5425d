"""Local administration of a running wsd-smbd: the control-socket protocol (control.py,
sans-IO) and the status report it answers (status.py); the asyncio driver is
server/control.py, the client program `wsd-smbstatus` is tools/wsd_tools/smbstatus."""
