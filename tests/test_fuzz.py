"""Fuzz every URL of the project, admin included: no input, however malformed, gets a 5xx.

The URL patterns come from `get_resolver()`, so a new view or a newly registered model is fuzzed
without touching this file. Each URL first gets the known bad inputs as explicit examples (NUL in
each of its query parameters in turn and in the path, huge floats, far-future UUIDs, an empty form,
JSON PostgreSQL cannot store, numbers past Python's digit limit, a wrong method), then generated
requests: path segments (existing names and ids, control characters, huge and tiny floats, odd
unicode, invalid UTF-8, very long strings, UUIDs), query parameters and form fields, sent with
GET, HEAD, POST, PUT and DELETE as a logged-in superuser, each in a savepoint rolled back after it.
Django's test client turns an exception into a 500 (`raise_request_exception=False`), which the
assertion sees. Deterministic (`derandomize=True`) and bounded: FUZZ_EXAMPLES generated requests
per URL (default 6, about 40 s for the file); FUZZ_EXAMPLES=100 digs deeper (about 5 minutes).
"""

import os
import re
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client, RequestFactory
from django.urls import get_resolver
from django.urls.resolvers import RegexPattern, URLResolver
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from comparisons.ids import uuid7
from comparisons.models import Evaluation
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    UserFactory,
    at,
)

EXAMPLES_PER_URL = int(os.environ.get("FUZZ_EXAMPLES", "6"))
PLACEHOLDER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^()]*\)")


def _routes(patterns=None, prefix="", name_prefix=""):
    """(route with <placeholders>, URL name) for every URL pattern, admin and included URLconfs too."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        text = str(pattern.pattern)
        if isinstance(pattern.pattern, RegexPattern):
            # The admin's app index and catch-all: `^(?P<app_label>a|b)/$` becomes `<app_label>/`.
            text = REGEX_GROUP.sub(lambda m: f"<{m['name']}>", text).removeprefix("^").removesuffix("$")
        if isinstance(pattern, URLResolver):
            namespace = f"{pattern.namespace}:" if pattern.namespace else ""
            yield from _routes(pattern.url_patterns, prefix + text, name_prefix + namespace)
        else:
            yield "/" + prefix + text, f"{name_prefix}{pattern.name or ''}"


ROUTES = sorted(set(_routes()))

# Values that broke pages before, and their neighbours, by kind: one kind per request, so a kind the
# middleware refuses (control characters) does not hide what the others would do further in.
NASTY = {
    "controls": ["\x00", "a\x00b", "\x01", "\x1f", "\x7f", "\x1b[31mred", "tab\there", "line\nbreak", "cr\rlf",
                 "qa\x00", "0\x00"],
    "numbers": ["1e400", "-1e400", "1e-400", "nan", "NaN", "inf", "-inf", "1e308", "4.9e-324", "0", "-1", "-0", "0.5",
                "99999999999999999999999999", "18446744073709551616", "2147483648", "-2147483649", "1" * 5000,
                "0x10", "1_000", "١٢٣"],
    "ids": ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "ffffffff-ffff-7fff-bfff-ffffffffffff", "00000000-0000-7000-8000-000000000000",
            "{ffffffff-ffff-ffff-ffff-ffffffffffff}", "urn:uuid:00000000-0000-7000-8000-000000000000",
            "0193", "019e", "ffffffffffffffffffffffffffffffff", "0,0", ",", ",,,", "-", "1", "2"],
    "text": ["", " ", "%", "%00", "..", ".", "a/b", "/", "\\", "'", '"', "<script>alert(1)</script>", "a;b", "é",
             "日本語", "🙂", "\u202e", "\ufeff", "\ufffd", "ﬁ", "Ⅻ", "\x85", "\u2028", "true", "null", "[]", "{}",
             '{"a": NaN}', '{"a": 1e400}', '{"a": "\\u0000"}', "[" * 2000, "1" * 5000 + "]", "a" * 300, "x" * 5000],
}
KINDS = [*NASTY, "anything"]
INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"a\xfeb", b"\xe2\x82"]
PORTAL_KEYS = ["q", "run_ids", "after", "filter", "metric", "sort", "format", "next"]
ADMIN_KEYS = ["q", "o", "p", "e", "all", "_popup", "_to_field", "_changelist_filters", "term", "app_label",
              "model_name", "field_name", "next"]
FORM_KEYS = ["action", "_selected_action", "select_across", "index", "_save", "_continue", "_addanother",
             "inference_id", "metric", "value", "reason", "username", "password", "old_password", "new_password1",
             "post"]


def _model_fields():
    """Every field name of every model in the admin: the keys forms are posted with."""
    names = set()
    for model in admin.site._registry:
        names |= {f.name for f in model._meta.fields} | {f.attname for f in model._meta.fields}
    return sorted(names)


FIELD_KEYS = _model_fields()


def _filter_parameters(user) -> dict[str, list[str]]:
    """Each admin changelist's own filter parameters (`status__exact`, `run_date`, ...): a changelist
    refuses unknown parameters before filtering, so only these reach the filters' code."""
    parameters = {}
    for model, model_admin in admin.site._registry.items():
        request = RequestFactory().get("/")
        request.user = user
        changelist = model_admin.get_changelist_instance(request)
        keys = [key for spec in changelist.filter_specs for key in spec.expected_parameters()]
        parameters[f"{model._meta.app_label}_{model._meta.model_name}_changelist"] = keys
    return parameters


@pytest.fixture
def world(db):
    """A small portal: an evaluation with runs (one with a config shadowing dict methods), datapoints,
    inferences and feedback; an evaluation whose name predates validation; a superuser's client."""
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float")
    runs = [RunFactory(evaluation=evaluation, at=at(10), config={"items": 1, "keys": 2, "values": 3}),
            RunFactory(evaluation=evaluation, at=at(20), tags={"items": "x"})]
    datapoints = [DatapointFactory(evaluation=evaluation, created=at(i)) for i in range(2)]
    for run in runs:
        for datapoint in datapoints:
            inference = InferenceFactory(run=run, datapoint=datapoint, id=uuid7(run.started_at))
            FeedbackFactory(inference=inference, metric="correct", value=1.0)
    FeedbackFactory(inference=inference, metric="similarity", value=0.5)
    legacy = EvaluationFactory(name="legacy")
    Evaluation.objects.filter(pk=legacy.pk).update(name="team/legacy\r\n\"x\"")  # written before validation
    RunFactory(evaluation=legacy)
    user = UserFactory(username="fuzzer", is_staff=True, is_superuser=True)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    values = {
        "name": ["qa", "team/legacy\r\n\"x\""],
        "run_id": [str(r.id) for r in runs],
        "datapoint_id": [str(d.id) for d in datapoints],
        "app_label": ["comparisons", "auth"],
        "content_type_id": [str(ContentType.objects.get_for_model(Evaluation).pk)],
        "id": [str(user.pk)],
    }
    for model in admin.site._registry:
        values[f"{model._meta.app_label}_{model._meta.model_name}"] = [
            quote(str(pk), safe="") for pk in model._default_manager.values_list("pk", flat=True)[:3]]
    return {"client": client, "session": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
            "values": values, "filters": _filter_parameters(user)}


def _query_keys(world, url_name) -> list[str]:
    """The query parameters a URL reads: a changelist's filters and search, or the portal's. (The admin's
    own, such as `_to_field` or `e`, are refused before filtering, so they come in generated requests only.)"""
    if url_name.startswith("admin:"):
        return [*world["filters"].get(url_name.removeprefix("admin:"), []), "q"]
    return PORTAL_KEYS


def _texts(kind):
    anything = st.one_of(st.text(max_size=30), st.floats().map(repr), st.uuids().map(str), st.integers().map(str))
    if kind == "anything":
        return anything
    return st.one_of(st.sampled_from(NASTY[kind]), st.sampled_from(NASTY[kind]), anything)


def _segment(known, kind):
    """One path segment, already percent-encoded: a known name or id, or a nasty value."""
    return st.one_of(
        st.sampled_from(known or ["1"]).map(lambda v: quote(v, safe="%")),
        _texts(kind).map(lambda v: quote(v, safe="")),
        st.sampled_from(INVALID_UTF8).map(lambda v: quote(v, safe="")),
    )


def _pairs(keys, kind):
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys), _texts(kind))
    return st.lists(st.tuples(key, _texts(kind)), max_size=8)


def _known(values, url_name, placeholder) -> list[str]:
    """Existing names or ids for a placeholder; `object_id` of an admin URL is a pk of that URL's model."""
    if placeholder == "object_id" and url_name.startswith("admin:"):
        return values.get(url_name.removeprefix("admin:").rsplit("_", 1)[0]) or []
    return values.get(placeholder) or []


def known_bad_requests(route, url_name, values, query_keys) -> list[tuple]:
    """The classes of input that gave 500s before, sent to every URL before the random ones."""

    def path(segment=None):
        return PLACEHOLDER.sub(lambda m: quote(segment, safe="") if segment is not None else
                               quote((_known(values, url_name, m["name"]) or ["1"])[0], safe="%"), route)

    def every(value):
        return "?" + urlencode([(key, value) for key in query_keys])

    def fields(value):
        return [(key, value) for key in FIELD_KEYS + FORM_KEYS]

    # One parameter at a time for NUL: a changelist refuses the whole query at its first bad value.
    one_at_a_time = [("GET", path() + "?" + urlencode({key: "a\x00"}), [], {}) for key in query_keys]
    return [
        *one_at_a_time,
        ("GET", path("a\x00b"), [], {"HTTP_HX_REQUEST": "true"}),
        ("GET", path() + every("1e400"), [], {}),
        ("GET", path("ffffffff-ffff-7fff-bfff-ffffffffffff") + every("-1"), [], {}),
        ("GET", path("a/b") + every("x" * 5000), [], {}),
        ("POST", path(), [], {}),  # an empty form, e.g. every admin add page
        ("POST", path(), fields('{"a": NaN}'), {}),
        ("POST", path(), fields("9" * 5000), {}),
        ("POST", path(), fields("x\x00"), {}),
        ("PUT", path(), [], {}),
    ]


@st.composite
def requests(draw, route, url_name, values, query_keys):
    """(method, path with query string, body fields, extra headers) for one route."""
    kind = draw(st.sampled_from(KINDS))

    def fill(match):
        return draw(_segment(_known(values, url_name, match["name"]), kind))

    path = PLACEHOLDER.sub(fill, route)
    query = draw(_pairs(query_keys + ADMIN_KEYS if url_name.startswith("admin:") else query_keys, kind))
    if query:
        path += "?" + urlencode(query)
    method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE"]))
    body = draw(_pairs(FIELD_KEYS + FORM_KEYS, kind)) if method in ("POST", "PUT") else []
    headers = draw(st.sampled_from([{}, {"HTTP_HX_REQUEST": "true"},
                                    {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "comparison"}]))
    return method, path, body, headers


def _send(client, method, path, body, headers):
    if method == "GET":
        return client.get(path, **headers)
    if method == "HEAD":
        return client.head(path, **headers)
    if method == "DELETE":
        return client.delete(path, **headers)
    if method == "POST" and len(body) % 2:  # half the posts multipart, half urlencoded
        data = {}
        for key, value in body:
            data.setdefault(key, []).append(value)
        return client.post(path, data, **headers)
    return client.generic(method, path, urlencode(body), content_type="application/x-www-form-urlencoded",
                          **headers)


def test_every_url_and_every_admin_page_is_fuzzed():
    names = {name for _route, name in ROUTES}
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        assert {f"{prefix}_changelist", f"{prefix}_add", f"{prefix}_change"} <= names, prefix
    assert {"evaluation_list", "comparison_detail", "comparison_export", "feedback_create", "run_detail"} <= names


@pytest.mark.parametrize(("route", "url_name"), ROUTES, ids=[f"{name or '-'}:{route}" for route, name in ROUTES])
def test_no_input_gives_a_server_error(world, route, url_name):
    """The known bad inputs (explicit examples), then EXAMPLES_PER_URL generated requests."""
    client = world["client"]

    def check(request):
        method, path, body, headers = request
        client.cookies = SimpleCookie({django_settings.SESSION_COOKIE_NAME: world["session"]})
        with transaction.atomic():  # each request starts from the same data, whatever the last one did
            response = _send(client, method, path, body, headers)
            content = b"".join(response.streaming_content) if response.streaming else response.content
            transaction.set_rollback(True)
        assert response.status_code < 500, (method, path, body, content[:2000].decode(errors="replace"))

    query_keys = _query_keys(world, url_name)
    for request in known_bad_requests(route, url_name, world["values"], query_keys):
        check = example(request)(check)
    check = given(requests(route, url_name, world["values"], query_keys))(check)
    settings(max_examples=EXAMPLES_PER_URL, derandomize=True, database=None, deadline=None,
             suppress_health_check=list(HealthCheck))(check)()


def test_the_fuzzing_client_sees_server_errors(world, monkeypatch):
    """An exception in a view reaches the fuzz test as a 500 instead of escaping the client."""
    def broken(name):
        raise RuntimeError("boom")

    monkeypatch.setattr("comparisons.views.queries.get_evaluation", broken)
    assert world["client"].get("/evaluations/qa/").status_code == 500
