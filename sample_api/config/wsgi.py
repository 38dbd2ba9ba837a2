"""WSGI entry point (gunicorn ``config.wsgi`` from the ``sample_api`` directory)."""

import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(here))
sys.path.insert(1, str(here.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
