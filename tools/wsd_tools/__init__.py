"""Command-line tools of the wsd project (wsd-accept, wsd-smbstatus, the SAN-provider test bench, the softRoCE VM harness)."""
