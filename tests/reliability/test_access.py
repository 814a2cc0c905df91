"""Access: with --auth nothing answers a stranger; file routes serve only the app's own temporary files;
the default bind is loopback; the server itself caps upload size."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from persona_demo.data.ingest import IngestLimits

AUTH = [("user", "pass")]
API_ROUTES = [
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("GET", "/gradio_api/openapi.json"),
    ("GET", "/gradio_api/queue/status"),
    ("GET", "/monitoring"),
    ("POST", "/gradio_api/upload"),
    ("POST", "/gradio_api/queue/join"),
    ("POST", "/gradio_api/run/predict"),
    ("GET", "/gradio_api/file=/etc/passwd"),
]
NAMED = ["select_persona", "create_persona", "rename_persona", "duplicate_persona", "delete_persona",
         "export_persona", "import_personas", "add_text", "upload_history", "edit_item", "delete_item",
         "compare", "chat"]  # fmt: skip
TRAVERSALS = [
    "/etc/passwd",
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "....//....//....//etc/passwd",
    "/proc/self/environ",
    "file:///etc/passwd",
    "C:\\Windows\\win.ini",
]


def login(url: str) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=30)
    response = http.post("/login", data={"username": "user", "password": "pass"})
    assert response.status_code == 200 and response.json() == {"success": True}
    return http


def test_auth_refuses_every_api_route_and_named_endpoint(serve, studio_store):
    url = serve(AUTH)
    stranger = httpx.Client(base_url=url, timeout=30)
    for method, path in API_ROUTES:
        response = stranger.request(method, path, json={"data": [1], "fn_index": 0, "session_hash": "x"})
        assert response.status_code == 401, (method, path, response.status_code)
    for name in NAMED:
        for path in (f"/gradio_api/call/{name}", f"/gradio_api/api/{name}", f"/gradio_api/run/{name}"):
            response = stranger.post(path, json={"data": [1]})
            assert response.status_code in (401, 404), (path, response.status_code)
            assert response.status_code == 401 or "Not Found" in response.text
    page = stranger.get("/")  # the login form, never the app's data
    seeded = [p.name for p in studio_store.list_personas()]
    assert page.status_code == 200 and not any(name in page.text for name in seeded)
    assert stranger.post("/login", data={"username": "user", "password": "wrong"}).status_code == 400
    assert login(url).get("/config").status_code == 200


def test_auth_refuses_gradio_client_without_credentials(serve):
    from gradio_client import Client

    url = serve(AUTH)
    with pytest.raises(Exception):  # noqa: B017 - any refusal; what matters is no session
        Client(url, verbose=False)
    with pytest.raises(Exception):  # noqa: B017
        Client(url, auth=("user", "wrong"), verbose=False)
    client = Client(url, auth=("user", "pass"), verbose=False)
    assert client.predict(1, api_name="/select_persona")[2]


def test_file_routes_serve_only_the_apps_own_temporary_files(serve, studio_store, tmp_path):
    from gradio_client import Client

    url = serve(AUTH)
    http = login(url)
    db_path = str(studio_store.path)
    outside = ["/etc/passwd", db_path, str(tmp_path), "app.py", "README.md", "persona_demo/app/launch.py"]
    for target in [*TRAVERSALS, *outside]:
        for prefix in ("/gradio_api/file=", "/file=", "/gradio_api/file/"):
            response = http.get(prefix + target)
            assert response.status_code in (400, 403, 404, 405), (prefix + target, response.status_code)
            assert "root:" not in response.text and "SQLite format" not in response.text
    client = Client(url, auth=("user", "pass"), verbose=False)  # positive control: our own export is served
    client.predict(1, api_name="/select_persona")
    exported = client.predict(api_name="/export_persona")
    assert '"format": "persona-demo.persona"' in Path(exported).read_text(encoding="utf-8")


def test_default_bind_is_loopback(monkeypatch):
    from persona_demo.app.launch import launch_options, parser

    for var in ("PERSONA_DEMO_HOST", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(var, raising=False)
    host = parser().parse_args([]).host
    assert host == "127.0.0.1"
    assert launch_options(host, 7860, None)["server_name"] == "127.0.0.1"


def test_the_server_refuses_an_upload_over_the_cap_before_our_parser(serve):
    url = serve()
    cap = IngestLimits().max_bytes
    http = httpx.Client(base_url=url, timeout=60)
    big = {"files": ("big.txt", b"a" * (cap + 1024), "text/plain")}
    response = http.post("/gradio_api/upload", files=big)
    assert response.status_code == 413, response.status_code
    small = http.post("/gradio_api/upload", files={"files": ("ok.txt", b"fine", "text/plain")})
    assert small.status_code == 200
