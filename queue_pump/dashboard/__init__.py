"""The dashboard's web app (`queue-pump dashboard`): the queue and its pumps in a browser.

Server-rendered pages (aiohttp's web server, Jinja2 templates with autoescaping), an SVG chart
drawn here from the data, and one small static script for live updates: no build step, nothing
fetched from elsewhere at page load. It sees the queue only through a ``Backend`` handed to it by
the command (cli/dashboard.py wraps the operator client), so the admin token stays on the server
and this package imports nothing of the pump. Loaded only by that command: the pump's start-up,
`--help` and idle memory never pay for it (tests/process/test_footprint.py)."""

from .app import DashboardConfig, build_app
from .backend import ApiError, Backend
from .server import RunningDashboard, start_dashboard

__all__ = ["ApiError", "Backend", "DashboardConfig", "RunningDashboard", "build_app",
           "start_dashboard"]
