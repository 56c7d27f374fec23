"""The domain: tenants, ingestions, processed-file history, runs, sources and engines."""
