"""Models the tests use for caching and invalidation."""
