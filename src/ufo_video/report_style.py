"""The stylesheet of the HTML reports (the demo's report.html, the sweep's sweep.html): inline CSS,
no external files. Outside `demo/` so `infer/` (the sweep page) can use it without importing
upward; the charts it styles come from `ufo_video.charts`."""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
.banner{background:#b00020;color:#fff;padding:14px 18px;font-size:17px;font-weight:bold;border-radius:6px}
.ok{background:#e6f4ea;border-left:6px solid #188038;padding:10px 14px}
.bad{background:#fdecea;border-left:6px solid #b00020;padding:10px 14px}
.note{background:#f3f3f3;border-left:6px solid #888;padding:10px 14px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.videos{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-end} .videos figure{margin:0;text-align:center;font-size:12px}
video,img.px{image-rendering:pixelated} pre{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.charts{display:flex;flex-wrap:wrap;gap:12px} .muted{color:#666;font-size:13px}
"""
