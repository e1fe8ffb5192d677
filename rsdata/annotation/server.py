"""The Label Studio server, through ``label-studio-sdk`` (2.x), with errors that say what to do.

The URL and the token come from ``--url`` / ``--token`` or the SDK's usual environment variables
``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``, never from code, templates or recipes. The token
is kept in this object only: every message rsdata builds from a server error passes through
:meth:`LabelStudioServer.clean`, which removes it, and the SDK's own retries are off (a retried
import could add tasks twice; resuming is rsdata's job, see :mod:`rsdata.annotation.rounds`).

How images reach the server: **uploaded through the API** into a companion "media" project of
the round (``POST /api/projects/{media}/import?commit_to_project=false``, one multipart request
per batch), then referenced from the round's tasks as ``/data/upload/...`` URLs. This works on a
stock server, local or remote, with no environment variable and no shared file system (local-files
storage needs ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED`` and a document root on the server's own
disk, which a remote server does not have). The companion project is needed because Label Studio
refuses direct file uploads into a project whose config reads more than one task field; it holds
files only, never tasks. Images are served by Label Studio itself, behind its login.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rsdata.errors import MissingDependencyError, RsdataError, UsageError

URL_ENV = "LABEL_STUDIO_URL"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
PAGE_SIZE = 100  # Label Studio's default page of the task list
UPLOAD_FILES = 50  # files per upload request (Label Studio's limit: 100)
UPLOAD_BYTES = 64 * 2**20  # bytes per upload request (Label Studio's limit: 250 MB)
MEDIA_CONFIG = '<View><Image name="image" value="$image"/></View>'
T = TypeVar("T")


class AnnotationServerError(RsdataError):
    """Label Studio cannot be reached, refuses the token, or refuses a request."""


class ConfigRejectedError(AnnotationServerError):
    """Label Studio rejected a round's labeling config."""


def credentials(url: str | None, token: str | None) -> tuple[str, str]:
    """The server URL and token from the options or the environment (never from elsewhere)."""
    url = (url or os.environ.get(URL_ENV) or "").strip()
    token = (token or os.environ.get(TOKEN_ENV) or "").strip()
    if not url:
        raise UsageError(f"no Label Studio URL: give --url http://HOST:PORT or set {URL_ENV}")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url {url}: give the server's http(s) address, e.g. http://127.0.0.1:8080")
    if not token:
        raise UsageError(f"no Label Studio API token: give --token or set {TOKEN_ENV} (Label Studio: "
                         "Account & Settings > Access Token)")
    return url.rstrip("/"), token


def _import_sdk() -> Any:
    try:
        import label_studio_sdk
    except ImportError:
        raise MissingDependencyError("label-studio-sdk", "annotate", "rsdata annotate") from None
    return label_studio_sdk


class LabelStudioServer:
    """One Label Studio server, reached with one token."""

    def __init__(self, url: str, token: str, timeout: float = 120.0) -> None:
        import httpx

        sdk = _import_sdk()
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.http = httpx.Client(timeout=timeout, follow_redirects=True)
        self.client = sdk.LabelStudio(base_url=self.url, api_key=token, httpx_client=self.http,
                                      timeout=timeout, max_retries=0)
        self._auth: dict[str, str] | None = None

    # -- errors ----------------------------------------------------------------------------
    def clean(self, text: Any) -> str:
        """``text`` without the token (in case a server or library echoes it)."""
        out = str(text)
        if self._token:
            out = out.replace(self._token, "***")
        return out

    def _detail(self, body: Any) -> str:
        if isinstance(body, (bytes, str)):
            try:
                body = json.loads(body)
            except ValueError:
                return self.clean(str(body)[:500])
        if isinstance(body, dict):
            parts = []
            if body.get("detail"):
                parts.append(str(body["detail"]))
            if body.get("validation_errors"):
                parts.append(json.dumps(body["validation_errors"], ensure_ascii=False))
            for key in ("label_config", "non_field_errors"):
                if key in body and key not in (body.get("validation_errors") or {}):
                    parts.append(f"{key}: {json.dumps(body[key], ensure_ascii=False)}")
            text = "; ".join(parts) or json.dumps(body, ensure_ascii=False)
            return self.clean(text[:1500])
        return self.clean(str(body)[:500])

    def error(self, exc: BaseException, doing: str) -> AnnotationServerError:
        """The rsdata error for a failed request (the token never appears in it)."""
        import httpx

        sdk_error = getattr(_import_sdk(), "ApiError", None)
        if isinstance(exc, httpx.TimeoutException):
            return AnnotationServerError(
                f"Label Studio at {self.url} did not answer in {self.timeout:.0f} s while {doing}. "
                "Check that the server is running and not overloaded; what was pushed so far is kept, "
                "so running the same command again resumes.")
        if isinstance(exc, (httpx.TransportError, OSError)):
            return AnnotationServerError(
                f"cannot reach Label Studio at {self.url} while {doing} ({self.clean(exc) or type(exc).__name__}). "
                f"Check that the server is running (label-studio start ...) and that --url / {URL_ENV} "
                "is its address; what was pushed so far is kept, so running the same command again resumes.")
        status = getattr(exc, "status_code", None)
        if sdk_error is not None and isinstance(exc, sdk_error) or status is not None:
            body = self._detail(getattr(exc, "body", ""))
            if status in (401, 403):
                return AnnotationServerError(
                    f"Label Studio at {self.url} refused the API token (HTTP {status}: {body}) while "
                    f"{doing}. Check --token / {TOKEN_ENV}: copy it from Account & Settings > Access "
                    "Token of that server; a legacy token works only when the server runs with "
                    "--enable-legacy-api-token (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true).")
            if status == 404:
                return AnnotationServerError(
                    f"Label Studio at {self.url} answered 404 (not found) while {doing}: {body}. Is "
                    "--url the server's root address, and does the project still exist?")
            return AnnotationServerError(
                f"Label Studio at {self.url} answered HTTP {status} while {doing}: {body}")
        return AnnotationServerError(f"Label Studio at {self.url}: {doing} failed: "
                                     f"{type(exc).__name__}: {self.clean(exc)[:500]}")

    def call(self, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``; a failure becomes an :class:`AnnotationServerError`."""
        import httpx

        sdk_error = getattr(_import_sdk(), "ApiError", Exception)
        try:
            return fn(*args, **kwargs)
        except (httpx.HTTPError, OSError, sdk_error) as exc:
            raise self.error(exc, doing) from None

    def _raw(self, method: str, path: str, doing: str, **kwargs: Any) -> Any:
        """A request the SDK has no method for (multipart uploads), with the SDK's auth header."""
        import httpx

        if self._auth is None:
            headers = self.call("authenticating", self.client._client_wrapper.get_headers)
            self._auth = {"Authorization": headers.get("Authorization") or f"Token {self._token}"}
        try:
            response = self.http.request(method, self.url + path, headers=self._auth, **kwargs)
        except (httpx.HTTPError, OSError) as exc:
            raise self.error(exc, doing) from None
        if response.status_code >= 400:
            raise self.error(_HttpStatus(response.status_code, response.text), doing)
        return response.json()

    # -- requests --------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """Check the URL and the token (one cheap request)."""
        user = self.call("checking the token (GET /api/current-user/whoami)", self.client.users.whoami)
        return {"id": user.id, "email": getattr(user, "email", None)}

    def find_project(self, marker: str) -> int | None:
        """The id of the project whose description holds ``marker`` (None: there is none)."""
        found = None
        pager = self.call("listing projects", self.client.projects.list, page_size=PAGE_SIZE)
        for project in self._iterate(pager, "listing projects"):
            if marker in (getattr(project, "description", None) or ""):
                if found is None or project.id < found:
                    found = project.id
        return found

    def create_project(self, title: str, description: str, config: str, overlap: int,
                       instructions: str, config_path: str) -> int:
        kwargs: dict[str, Any] = {"title": title, "description": description, "label_config": config,
                                  "maximum_annotations": overlap, "show_skip_button": True,
                                  "expert_instruction": instructions,
                                  "show_instruction": bool(instructions)}
        try:
            project = self.client.projects.create(**kwargs)
        except Exception as exc:
            err = self.error(exc, f"creating the project {title!r}")
            if getattr(exc, "status_code", None) == 400:
                raise ConfigRejectedError(
                    f"Label Studio at {self.url} rejected the labeling config {config_path}: "
                    f"{self._detail(getattr(exc, 'body', ''))}. Fix the config (it is XML a user may "
                    "edit; see annotation/configs/) and push again.") from None
            raise err from None
        return int(project.id)

    def project(self, project_id: int) -> dict[str, Any]:
        project = self.call(f"reading project {project_id}", self.client.projects.get, project_id)
        fields = ("id", "title", "task_number", "num_tasks_with_annotations", "finished_task_number",
                  "total_annotations_number", "skipped_annotations_number", "maximum_annotations",
                  "label_config")
        return {f: getattr(project, f, None) for f in fields}

    def project_exists(self, project_id: int) -> bool:
        try:
            self.client.projects.get(project_id)
            return True
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                return False
            raise self.error(exc, f"reading project {project_id}") from None

    def _iterate(self, pager: Any, doing: str) -> Iterator[Any]:
        """Items of every page of an SDK pager (each page is a request that may fail)."""
        import httpx

        sdk_error = getattr(_import_sdk(), "ApiError", Exception)
        it = iter(pager)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except (httpx.HTTPError, OSError, sdk_error) as exc:
                raise self.error(exc, doing) from None
            yield item

    def tasks(self, project_id: int, annotations: bool = False) -> Iterator[dict[str, Any]]:
        """Every task of a project, page by page (``PAGE_SIZE`` a page, as Label Studio pages
        by default): ``{"id", "data"}``, and ``annotations`` when asked."""
        doing = f"listing the tasks of project {project_id}"
        pager = self.call(doing, self.client.tasks.list, project=project_id, page_size=PAGE_SIZE,
                          fields="all" if annotations else "task_only")
        for task in self._iterate(pager, doing):
            item = {"id": task.id, "data": dict(task.data or {})}
            if annotations:
                item["annotations"] = [a if isinstance(a, dict) else a.model_dump()
                                       for a in (task.annotations or [])]
            yield item

    def uploads(self, media_project: int) -> dict[str, str]:
        """Files already uploaded to the media project: original name -> URL path."""
        items = self._raw("GET", f"/api/projects/{media_project}/file-uploads",
                          f"listing the uploaded images of project {media_project}",
                          params={"all": "true"})
        out: dict[str, str] = {}
        for item in sorted(items, key=lambda i: i.get("id", 0)):
            stored = str(item.get("file", ""))
            name = stored.rsplit("/", 1)[-1].split("-", 1)[-1]  # upload/{project}/{uuid8}-{name}
            out.setdefault(name, "/data/" + stored.lstrip("/"))
        return out

    def upload(self, media_project: int, files: list[tuple[str, bytes, str]]) -> dict[str, str]:
        """Upload files (name, bytes, MIME type); returns name -> URL path. Requests hold at most
        ``UPLOAD_FILES`` files and ``UPLOAD_BYTES`` bytes (Label Studio refuses more than 100 files,
        ``DATA_UPLOAD_MAX_NUMBER_FILES``, or 250 MB in one request)."""
        out: dict[str, str] = {}
        chunk: list[tuple[str, bytes, str]] = []
        size = 0
        for item in files:
            if chunk and (len(chunk) >= UPLOAD_FILES or size + len(item[1]) > UPLOAD_BYTES):
                out.update(self._upload(media_project, chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += len(item[1])
        if chunk:
            out.update(self._upload(media_project, chunk))
        return out

    def _upload(self, media_project: int, files: list[tuple[str, bytes, str]]) -> dict[str, str]:
        doing = f"uploading {len(files)} images to project {media_project}"
        form = [(f"file{i}", (name, data, mime)) for i, (name, data, mime) in enumerate(files)]
        answer = self._raw("POST", f"/api/projects/{media_project}/import", doing,
                           params={"commit_to_project": "false"}, files=form)
        ids = answer.get("file_upload_ids") or []
        if len(ids) != len(files):
            raise AnnotationServerError(f"Label Studio at {self.url} stored {len(ids)} of {len(files)} "
                                        f"images while {doing}; run the same command again")
        items = self._raw("GET", f"/api/projects/{media_project}/file-uploads", doing,
                          params={"ids": json.dumps(ids)})
        out: dict[str, str] = {}
        for item in items:
            stored = str(item.get("file", ""))
            out[stored.rsplit("/", 1)[-1].split("-", 1)[-1]] = "/data/" + stored.lstrip("/")
        return out

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> int:
        """Import tasks (``{"data": ...}``) in one request; returns how many were created."""
        result = self.call(f"importing {len(tasks)} tasks into project {project_id}",
                           self.client.projects.import_tasks, project_id, request=tasks,
                           return_task_ids=True)
        return int(getattr(result, "task_count", None) or len(getattr(result, "task_ids", None) or []))

    def export(self, project_id: int, title: str, timeout: float = 1800.0) -> list[dict[str, Any]]:
        """Every task with its annotations, through an export snapshot (created, polled until it
        is complete, downloaded, deleted), not the synchronous export, which times out on large
        projects."""
        exports = self.client.projects.exports
        options = {"timeout_in_seconds": int(timeout)}
        snap = self.call(f"creating an export of project {project_id}", exports.create, project_id,
                         title=title[:250], request_options=options)
        deadline = time.monotonic() + timeout
        delay = 0.2
        while str(getattr(snap, "status", "")) not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise AnnotationServerError(
                    f"the export {snap.id} of project {project_id} on {self.url} did not finish in "
                    f"{timeout:.0f} s (status {snap.status}); run the pull again later")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            snap = self.call(f"waiting for export {snap.id} of project {project_id}", exports.get,
                             project_id, snap.id)
        if str(snap.status) == "failed":
            raise AnnotationServerError(f"Label Studio at {self.url} failed to export project "
                                        f"{project_id} (export {snap.id}); see the server's log")
        doing = f"downloading export {snap.id} of project {project_id}"
        chunks = self.call(doing, lambda: list(exports.download(project_id, snap.id, export_type="JSON",
                                                                 request_options=options)))
        try:
            tasks = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise AnnotationServerError(f"the export of project {project_id} from {self.url} is not "
                                        f"JSON ({exc}); run the pull again") from None
        try:
            exports.delete(project_id, snap.id)
        except Exception:  # the snapshot is only a file on the server; leaving it is harmless
            pass
        if not isinstance(tasks, list):
            raise AnnotationServerError(f"the export of project {project_id} from {self.url} is not a "
                                        "list of tasks")
        return tasks

    def close(self) -> None:
        self.http.close()


class _HttpStatus(Exception):
    """A non-2xx answer to a raw request (shaped like the SDK's ApiError)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.body = body
