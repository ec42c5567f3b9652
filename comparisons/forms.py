"""Parsing of the comparison's query string, the metric-correction form, and the admin's JSON field."""

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput

from comparisons.ids import parse_uuid
from comparisons.queries import ComparisonError, RowFilter, RowQuery, RowSort, parse_run_ids
from comparisons.rows_html import GRID, STACKED, VIEW_CHOICES
from comparisons.validation import json_problem


class ComparisonForm(forms.Form):
    """The comparison page's state, all of it in the query string."""

    run_ids = forms.CharField(required=False)
    after = forms.CharField(required=False)
    filter = forms.CharField(required=False)
    metric = forms.CharField(required=False)
    sort = forms.CharField(required=False)
    view = forms.CharField(required=False)

    def parsed(self):
        """(run ids, RowQuery), or ComparisonError (400) naming the first bad parameter."""
        self.is_valid()
        data = self.cleaned_data
        run_ids = parse_run_ids(data.get("run_ids"))
        after = None
        if data.get("after"):
            after = parse_uuid(data["after"])
            if after is None:
                raise ComparisonError(f"after='{data['after'][:60]}' is not a datapoint id (a UUID is expected).")
        query = RowQuery(filter=data.get("filter") or RowFilter.ALL, metric=data.get("metric") or "",
                         sort=data.get("sort") or RowSort.NEWEST, after=after)
        return run_ids, query

    def layout(self, run_count: int) -> str:
        """`view=grid|stacked`; without it, the grid from 3 runs on (side by side reads best there)."""
        self.is_valid()
        view = self.cleaned_data.get("view") or ""
        if view and view not in dict(VIEW_CHOICES):
            raise ComparisonError(f"Unknown view '{view[:60]}'; use grid or stacked.")
        return view or (GRID if run_count >= 3 else STACKED)

    def state(self) -> dict:
        """The non-empty parameters, for building links that keep the page's state."""
        self.is_valid()
        return {k: v for k, v in self.cleaned_data.items() if v and k != "after"}


class CorrectionForm(forms.Form):
    """A human correction of one metric value of one inference."""

    inference_id = forms.UUIDField()
    metric = forms.CharField(max_length=200)
    value = forms.FloatField()
    reason = forms.CharField(max_length=2000, required=False)


class RevertForm(forms.Form):
    """Revert the human correction of one metric of one inference to the evaluator's value."""

    inference_id = forms.UUIDField()
    metric = forms.CharField(max_length=200)


class StorableJSONField(forms.JSONField):
    """Django's JSON form field, refusing with a form error what would otherwise be a 500: JSON that
    Python cannot read (numbers beyond its 4,300-digit limit, nesting beyond its recursion limit) and
    values PostgreSQL cannot store (NUL in a string, NaN, Infinity, see `json_problem`)."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except (ValueError, RecursionError) as error:  # Django itself only catches JSONDecodeError
            raise ValidationError(self.error_messages["invalid"], code="invalid", params={"value": value}) from error

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except (ValueError, RecursionError):
            return InvalidJSONInput(data)

    def validate(self, value):
        super().validate(value)
        if problem := json_problem(value):
            raise ValidationError(f"This JSON {problem}.", code="unstorable")
