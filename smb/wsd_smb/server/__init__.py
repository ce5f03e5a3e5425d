"""The asyncio driver, configuration and the `wsd-smbd` program."""
