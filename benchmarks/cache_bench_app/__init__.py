"""The Django app the response-caching benchmark serves: one model, a few list views."""
