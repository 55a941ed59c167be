"""ObjectStore behaviour against a real S3 server (nanio, started here) and the same checks on LocalStore.

nanio enforces SigV4 presigned URLs (signature, expiry, signed Content-Type and Content-Length), so the
refusal table below proves that S3Store's URLs are really restricted — and that LocalStore refuses the
same requests with the same status.
"""
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pytest
import requests
from botocore.exceptions import ClientError

import s3lib
from s3lib.core import InvalidRequest, NotFound, S3libError, SettingsError, load_settings
from s3lib.storage import LocalStore, ObjectInfo, S3Store, open_store

from conftest import NANIO_ACCESS_KEY as ACCESS_KEY, NANIO_SECRET_KEY as SECRET_KEY

pytestmark = pytest.mark.timeout(120)
SIGNING_SECRET = "local-store-signing-secret-for-tests-0123456789"


@pytest.fixture(scope="module")
def s3_store(nanio_endpoint):
    store = S3Store(f"s3lib-test-{uuid.uuid4().hex[:12]}", endpoint_url=nanio_endpoint,
                    access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    store.ensure_bucket()
    return store


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    return LocalStore(tmp_path_factory.mktemp("local"), "http://127.0.0.1:7860", SIGNING_SECRET)


@pytest.fixture(params=["local", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def prefix():
    return f"users/{uuid.uuid4().hex}/"


# --- sending presigned requests: over HTTP to nanio, or through LocalStore's handlers as the app route does ---

def send_put(store, url: str, headers: dict, body: bytes) -> int:
    if isinstance(store, S3Store):
        return requests.put(url, data=body, headers=headers, timeout=10).status_code
    parts = urlsplit(url)
    # requests always sends the real body length as Content-Length; do the same here
    sent = {**headers, "Content-Length": str(len(body))}
    try:
        store.accept_upload(unquote(parts.path.removeprefix("/objects/")), dict(parse_qsl(parts.query)), sent, body)
    except S3libError as e:
        return e.status
    return 200


def send_get(store, url: str) -> tuple[int, bytes]:
    if isinstance(store, S3Store):
        response = requests.get(url, timeout=10)
        return response.status_code, response.content
    parts = urlsplit(url)
    try:
        data, _ = store.serve_download(unquote(parts.path.removeprefix("/objects/")), dict(parse_qsl(parts.query)))
    except S3libError as e:
        return e.status, b""
    return 200, data


def change_query(url: str, name_end: str, change) -> str:
    "Apply `change` to the query parameter whose name ends with `name_end` (X-Amz-Signature / signature)."
    parts = urlsplit(url)
    query = [(k, change(v) if k.lower().endswith(name_end) else v) for k, v in parse_qsl(parts.query)]
    assert any(k.lower().endswith(name_end) for k, _ in query), f"{url} has no *{name_end} parameter"
    return urlunsplit(parts._replace(query=urlencode(query)))


def flip_last(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def other_key(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.replace("/inputs/0", "/inputs/1")))


# --- the ObjectStore operations behave the same on both stores ---

def test_put_get_head_delete(store, prefix):
    key = prefix + "jobs/j1/inputs/0"
    store.put(key, b"\xff\xd8 jpeg", "image/jpeg")
    assert store.get(key) == b"\xff\xd8 jpeg"
    assert store.head(key) == ObjectInfo(size=7, content_type="image/jpeg")
    store.put(key, b"\x89PNG\r\n\n", "image/png")  # replaced, type and all
    assert (store.get(key), store.head(key)) == (b"\x89PNG\r\n\n", ObjectInfo(7, "image/png"))
    store.put(prefix + "empty", b"", "application/octet-stream")
    assert (store.get(prefix + "empty"), store.head(prefix + "empty")) == (b"", ObjectInfo(0, "application/octet-stream"))
    store.delete(key)
    store.delete(key)  # deleting a missing object is not an error
    assert store.head(key) is None
    with pytest.raises(NotFound, match="does not exist"):
        store.get(key)


def test_delete_prefix_is_a_string_prefix(store, prefix):
    for user in ("u1", "u10"):
        for item in range(3):
            store.put(f"{prefix}{user}/jobs/j1/results/{item}.png", b"png", "image/png")
    store.put(f"{prefix}u1/jobs/j2/inputs/0", b"jpeg", "image/jpeg")
    assert store.delete_prefix(f"{prefix}u1/jobs/j1/") == 3
    assert store.head(f"{prefix}u1/jobs/j2/inputs/0") == ObjectInfo(4, "image/jpeg")
    assert store.head(f"{prefix}u10/jobs/j1/results/0.png") == ObjectInfo(3, "image/png")
    assert store.delete_prefix(f"{prefix}u1/jobs/j1/") == 0
    assert store.delete_prefix(f"{prefix}u1") == 1 + 3  # like S3: u1 and u10
    assert store.head(f"{prefix}u10/jobs/j1/results/0.png") is None
    with pytest.raises(InvalidRequest, match="every object"):
        store.delete_prefix("")


@pytest.mark.parametrize("key", ["../x", "a//b", "/abs", "a\\b", "a\x00b", "k" * 1025])
def test_bad_keys_are_refused_before_any_request(store, key):
    for call in (lambda: store.put(key, b"x", "image/png"), lambda: store.get(key), lambda: store.head(key),
                 lambda: store.delete(key), lambda: store.presign_put(key, "image/png", 1, 60),
                 lambda: store.presign_get(key, 60)):
        with pytest.raises(InvalidRequest):
            call()


# --- presigned uploads: one table, both stores, same statuses ---

PHOTO = b"\xff\xd8\xff\xe0 a small jpeg body"
UPLOAD_CASES = [  # (name, change url, change headers, change body, expected status)
    ("as returned", lambda u: u, lambda h: h, lambda b: b, 200),
    ("tampered signature", lambda u: change_query(u, "signature", flip_last), lambda h: h, lambda b: b, 403),
    ("extended expiry", lambda u: change_query(u, "expires", lambda v: str(int(v) + 3600)), lambda h: h, lambda b: b, 403),
    ("another key", other_key, lambda h: h, lambda b: b, 403),
    ("wrong content type", lambda u: u, lambda h: {**h, "Content-Type": "image/png"}, lambda b: b, 403),
    ("no content type", lambda u: u, lambda h: {"Content-Length": h["Content-Length"]}, lambda b: b, 403),
    ("oversized body", lambda u: u, lambda h: {"Content-Type": h["Content-Type"]}, lambda b: b + b"x" * 1000, 403),
    ("short body", lambda u: u, lambda h: {"Content-Type": h["Content-Type"]}, lambda b: b[:-1], 403),
]


@pytest.mark.parametrize("name, change_url, change_headers, change_body, status", UPLOAD_CASES,
                         ids=[case[0] for case in UPLOAD_CASES])
def test_presigned_upload(store, prefix, name, change_url, change_headers, change_body, status):
    key = prefix + "jobs/j1/inputs/0"
    upload = store.presign_put(key, "image/jpeg", len(PHOTO), expires_in=300)
    assert upload.method == "PUT"
    assert upload.headers == {"Content-Type": "image/jpeg", "Content-Length": str(len(PHOTO))}
    assert send_put(store, change_url(upload.url), change_headers(dict(upload.headers)), change_body(PHOTO)) == status
    if status == 200:
        assert store.head(key) == ObjectInfo(len(PHOTO), "image/jpeg")
        assert store.get(key) == PHOTO
    else:
        assert store.head(key) is None and store.head(prefix + "jobs/j1/inputs/1") is None


def test_presigned_download(store, prefix):
    key = prefix + "jobs/j1/inputs/0"
    store.put(key, PHOTO, "image/jpeg")
    store.put(prefix + "jobs/j1/inputs/1", b"another", "image/jpeg")
    url = store.presign_get(key, expires_in=300)
    assert url.startswith("http://127.0.0.1:")
    assert send_get(store, url) == (200, PHOTO)
    assert send_get(store, change_query(url, "signature", flip_last))[0] == 403
    assert send_get(store, change_query(url, "expires", lambda v: str(int(v) + 3600)))[0] == 403
    assert send_get(store, other_key(url))[0] == 403
    upload_url = store.presign_put(key, "image/jpeg", len(PHOTO), 300).url
    assert send_get(store, upload_url)[0] == 403  # an upload URL does not grant reading


def test_expired_urls_are_refused(local_store, s3_store):
    "One wait for both stores: URLs valid for 1 s are refused 2 s later."
    key = f"users/{uuid.uuid4().hex}/jobs/j1/inputs/0"
    urls = []
    for store in (local_store, s3_store):
        store.put(key, PHOTO, "image/jpeg")
        urls.append((store, store.presign_put(key, "image/jpeg", 4, expires_in=1), store.presign_get(key, expires_in=1)))
    time.sleep(2.2)
    for store, upload, download in urls:
        assert send_put(store, upload.url, upload.headers, b"new!") == 403, store
        assert send_get(store, download)[0] == 403, store
        assert store.get(key) == PHOTO, store


# --- S3 specifics: bucket creation, credentials, open_store ---

def test_ensure_bucket_creates_once(nanio_endpoint):
    store = S3Store(f"s3lib-new-{uuid.uuid4().hex[:12]}", endpoint_url=nanio_endpoint,
                    access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with pytest.raises(ClientError, match="404"):
        store.client.head_bucket(Bucket=store.bucket)  # no bucket yet
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.put("users/u1/x", b"x", "image/png")
    assert store.head("users/u1/x") == ObjectInfo(1, "image/png")


def test_wrong_credentials_stop_start_up(nanio_endpoint, s3_store):
    intruder = S3Store(s3_store.bucket, endpoint_url=nanio_endpoint, access_key=ACCESS_KEY, secret_key="not-the-secret")
    with pytest.raises(SettingsError, match="cannot be used"):
        intruder.ensure_bucket()


def test_open_store_s3(nanio_endpoint):
    settings = load_settings(Path(s3lib.__file__).resolve().parent.parent / "settings.ini", env={})
    bucket = f"s3lib-open-{uuid.uuid4().hex[:12]}"
    settings = settings.replace(storage={"backend": "s3", "endpoint_url": nanio_endpoint, "bucket": bucket,
                                         "access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
    store = open_store(settings, "http://127.0.0.1:7860", SIGNING_SECRET)
    assert isinstance(store, S3Store) and store.bucket == bucket
    store.put("users/u1/x", b"ok", "text/plain")  # the bucket exists
    assert store.get("users/u1/x") == b"ok"
