"""Command-line tools of the wsd project (wsd-accept, the SAN-provider test bench, the softRoCE VM harness)."""
