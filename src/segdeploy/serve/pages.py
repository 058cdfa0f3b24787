"""The routes for people: ``/`` (a page to try the served models in a browser) and ``/docs`` /
``/redoc`` (the OpenAPI reference), all from files inside installed packages — nothing is fetched
from a CDN, so every page works on a machine without a network.

The page (``serve/web``: HTML, JS, CSS) talks to the server's own endpoints only: it lists
``GET /v1/models`` (configuration, fidelity verdict, artifact digest) and sends each dropped image
to ``POST /v1/models/{model}/predict`` twice (mask, cut-out), showing them side by side with
download links and the measured latency. Swagger UI and ReDoc come from the ``fastapi-offline``
distribution's static files.
"""

from __future__ import annotations

from pathlib import Path

#: URL prefixes of packaged static files (open without an API key: they hold no data)
PAGE_STATIC = "/static/page"
DOCS_STATIC = "/static/docs"
WEB_DIR = Path(__file__).resolve().parent / "web"


def docs_assets_dir() -> Path | None:
    """Where the Swagger UI / ReDoc files are installed (None when fastapi-offline is missing)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def add_page_routes(app) -> None:
    """Register ``/``, ``/docs``, ``/redoc`` and the static folders on ``app`` (built with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN-based pages are not registered)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(PAGE_STATIC, StaticFiles(directory=WEB_DIR), name="page-static")
    assets = docs_assets_dir()
    if assets is not None:
        app.mount(DOCS_STATIC, StaticFiles(directory=assets), name="docs-static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    def missing():
        return JSONResponse({"detail": "the API reference pages need the fastapi-offline package "
                                       "(pip install 'segdeploy[serve]'); /openapi.json works without it"},
                            status_code=404)

    @app.get("/docs", include_in_schema=False)
    async def swagger():
        if assets is None:
            return missing()
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        if assets is None:
            return missing()
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_STATIC}/favicon.png", with_google_fonts=False)
