"""URLs the tests mount views on (most tests build their own with ``override_settings``)."""

urlpatterns: list = []
