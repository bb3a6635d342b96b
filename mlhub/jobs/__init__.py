"""Jobs: persistence, the tenant-facing service, dispatch and execution of attempts."""
