"""The staff console at /staff: console.py builds and mounts it, views.py renders what it shows,
assets.py holds its style sheet and page script."""

from ui.web.staff.console import build_staff_app, mount_staff

__all__ = ["build_staff_app", "mount_staff"]
