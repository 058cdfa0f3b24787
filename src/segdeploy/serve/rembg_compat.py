"""``POST /api/remove`` with the form fields of rembg's server (``rembg s``), so that an existing
rembg client switches by changing its base URL.

rembg's fields and what segdeploy does with them:

========  ================================  ======================================================
field     rembg meaning                     here
========  ================================  ======================================================
file      the image (multipart, required)   the image
model     rembg session name (u2net, ...)   a model this server serves; absent = the first one
om        only mask                         true: the mask PNG; false (default): RGBA cut-out
bgc       background colour "R,G,B,A"       the cut-out is composited onto it (query or form)
a         alpha matting                     accepted and ignored (no matting; the map is the alpha)
af,ab,ae  alpha-matting thresholds/erosion  accepted and ignored
ppm       post-process mask                 accepted and ignored (masks are served as predicted)
extras    JSON of session options           accepted and ignored
========  ================================  ======================================================

``GET /api/remove?url=...`` (rembg fetches the URL) is refused with 400: this server never
fetches URLs; send the bytes.
"""

from __future__ import annotations

from fastapi import Request  # module level: FastAPI resolves the route's string annotation here

IGNORED_FIELDS = ("a", "af", "ab", "ae", "ppm", "extras")
_TRUE = ("1", "true", "yes", "on", "t", "y")


def _flag(value) -> bool:
    return str(value).strip().lower() in _TRUE if value is not None else False


def _colour(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        parts = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        parts = ()
    if len(parts) not in (3, 4) or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"bgc must be 'R,G,B' or 'R,G,B,A' with values 0..255, got {text!r}")
    return parts


def add_rembg_routes(app, state, answer, read_upload) -> None:
    """Register the rembg-compatible routes on ``app`` (``answer`` is the app's shared handler)."""
    from fastapi.responses import JSONResponse

    form_body = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "model": {"type": "string"},
            "om": {"type": "boolean"}, "bgc": {"type": "string"},
            **{name: {"type": "string", "description": "accepted for rembg compatibility, ignored"}
               for name in IGNORED_FIELDS}}}}}}}

    @app.post("/api/remove", openapi_extra=form_body, tags=["rembg compatibility"])
    async def remove(request: Request):
        """rembg's ``POST /api/remove``: the RGBA cut-out (or the mask with ``om=true``)."""
        from segdeploy.serve.app import UploadError, read_form

        fields: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            try:
                form = await read_form(request)
            except UploadError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=400)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        model = fields.get("model") or request.query_params.get("model") or next(iter(state.services))
        try:
            background = _colour(request.query_params.get("bgc") or fields.get("bgc"))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        output = "mask" if _flag(fields.get("om") or request.query_params.get("om")) else "cutout"
        return await answer(model, lambda: read_upload(request), output, request, background)

    @app.get("/api/remove", tags=["rembg compatibility"])
    async def remove_url():
        """Refused: this server never fetches URLs (send the image bytes with POST)."""
        return JSONResponse({"detail": "URL fetching is disabled on this server; POST the image bytes "
                                       "as multipart field 'file'"}, status_code=400)
