"""How `scan --fetch` fetches a URL list's images: HTTP with retries, politeness and
per-host limits shared by every worker on a machine.

Machinery, not a format: the URL-list format (`clearset.formats.urls`) is its one user.
It lives in a package of its own so that `clearset/formats/` lists formats alone.
"""
