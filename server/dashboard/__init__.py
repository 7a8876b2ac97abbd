"""The operator dashboard's static assets (``static/``), shipped inside the package.

No CDN and no build step: the page is plain HTML, CSS and ES modules, and its charts
are plain SVG (:file:`static/charts.js`). A charting library would have to be vendored or
built when the package is made, for a handful of line and bar charts that one SVG path
per series draws; so there is none.
"""

from server.dashboard.assets import ASSETS, Asset, load_assets

__all__ = ["ASSETS", "Asset", "load_assets"]
