"""``wsd-smbstatus``: what a running wsd-smbd serves (sessions, tree connects, open files,
byte-range locks), like Samba's ``smbstatus``; it asks the server's control socket."""
