"""The browser dashboards: tenant admins' pages under /t/<slug>/ and operators' under /staff/."""
