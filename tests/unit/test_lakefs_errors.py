"""How lakeFS SDK and transport errors become clearlake's errors (`store._translate`)."""

from __future__ import annotations

import http.client
import json

import pytest
import urllib3
from lakefs_sdk.exceptions import ApiException

from clearlake import errors
from clearlake.lakefs import _error_text, _translate


def _api_error(status: int, body: str | None, reason: str = "Reason") -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = body
    return error


def _translated(raised: BaseException) -> errors.LakeFSError:
    with pytest.raises(errors.LakeFSError) as caught, \
            _translate("get object", "photos", "main", "images/a.jpg"):
        raise raised
    assert caught.value.__cause__ is raised  # the SDK's error stays attached
    return caught.value


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, '{"message": "authentication required"}', errors.PermissionDeniedError),
        (403, '{"message": "insufficient permissions"}', errors.PermissionDeniedError),
        (404, '{"message": "object not found"}', errors.NotFoundError),
        (409, '{"message": "branch already exists"}', errors.ConflictError),
        (400, '{"message": "cannot merge into dirty branch"}', errors.DirtyBranchError),
        (400, '{"message": "bad request: invalid path"}', errors.LakeFSError),
        (422, '{"message": "unprocessable"}', errors.LakeFSError),
        (429, '{"message": "slow down"}', errors.UnavailableError),
        (500, '{"message": "internal error"}', errors.UnavailableError),
        (503, "", errors.UnavailableError),
    ],
)
def test_each_http_status_becomes_one_clearlake_error(
    status: int, body: str, kind: type[errors.LakeFSError]
) -> None:
    error = _translated(_api_error(status, body))
    assert type(error) is kind
    assert error.status == status
    assert (error.repository, error.ref, error.path) == ("photos", "main", "images/a.jpg")
    message = json.loads(body)["message"] if body else "Reason"
    assert str(error) == (f"get object: {message} "
                          "(repository 'photos', ref 'main', path 'images/a.jpg')")


def test_a_dirty_branch_is_also_a_conflict() -> None:
    assert isinstance(_translated(_api_error(400, '{"message": "dirty branch"}')),
                      errors.ConflictError)


def test_a_hook_refusal_carries_the_action_run_id() -> None:
    body = json.dumps({"message": "pre-merge hook aborted, run_id: 7a1b2c3d4e"})
    error = _translated(_api_error(412, body))
    assert type(error) is errors.HookRejectedError
    assert (error.status, error.run_id) == (412, "7a1b2c3d4e")
    assert _translated(_api_error(412, '{"message": "hook failed"}')).run_id is None


def test_no_answer_at_all_is_unavailable() -> None:
    error = _translated(_api_error(0, None))
    assert type(error) is errors.UnavailableError


@pytest.mark.parametrize(
    "raised",
    [
        urllib3.exceptions.MaxRetryError(None, "/api/v1", "refused"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("connection aborted"),
        http.client.RemoteDisconnected("closed"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
)
def test_transport_failures_are_unavailable_and_name_the_call(raised: BaseException) -> None:
    error = _translated(raised)
    assert type(error) is errors.UnavailableError
    assert error.status is None
    assert str(error).startswith("get object: lakeFS is unreachable")
    assert "repository 'photos'" in str(error)


def test_bodies_that_are_not_lakefs_json_keep_a_readable_message() -> None:
    assert str(_translated(_api_error(418, "plain text", reason="Teapot"))).startswith(
        "get object: plain text")
    assert str(_translated(_api_error(404, "{}", reason="Not Found"))).startswith(
        "get object: Not Found")


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), _translate("get object", "photos"):
        raise KeyError("a bug, not a lakeFS error")


def test_an_s3_error_body_reads_as_code_and_message() -> None:
    xml = b"<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>"
    assert json.loads(_error_text(xml)) == {"message": "NoSuchKey: The key does not exist"}
    assert _error_text(b'{"message": "x"}') == '{"message": "x"}'


def test_the_where_of_an_error_lists_only_what_is_known() -> None:
    assert str(errors.NotFoundError("gone")) == "gone"
    assert str(errors.NotFoundError("gone", repository="r", path="p")) == (
        "gone (repository 'r', path 'p')")
