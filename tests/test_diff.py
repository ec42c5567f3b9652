"""The datapoint page's word diff: content, escaping, the size cap and the time limit (no time is asserted)."""

import re
from html import unescape

import pytest
from django.urls import reverse

from comparisons import diff
from comparisons.benchmark import diff_texts
from comparisons.diff import word_diff
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, InferenceFactory, RunFactory


def sides(html: str) -> tuple[str, str]:
    """The old and the new text a diff's HTML stands for (what is not added, what is not removed)."""
    old = re.sub(r"<ins>.*?</ins>", "", html, flags=re.S)
    new = re.sub(r"<del>.*?</del>", "", html, flags=re.S)
    return unescape(re.sub(r"</?del>", "", old)), unescape(re.sub(r"</?ins>", "", new))


def test_removed_and_added_words():
    result = word_diff("the cat sat on the mat", "a dog sat on the mat today")
    assert result.html == "<del>the cat</del><ins>a dog</ins> sat on the mat<ins> today</ins>"
    assert not result.too_large and not result.timed_out and result.words == 7


def test_equal_and_empty_texts():
    assert word_diff("same words", "same words").html == "same words"
    assert word_diff("", "new text").html == "<ins>new text</ins>"
    assert word_diff(None, "x").html == "<ins>x</ins>"
    assert word_diff("old", "").html == "<del>old</del>"


def test_untrusted_text_stays_text():
    result = word_diff('safe <b>bold</b>', 'safe <script>alert("x")</script> & more')
    assert "<script>" not in result.html and "<b>" not in result.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in result.html
    assert sides(result.html) == ('safe <b>bold</b>', 'safe <script>alert("x")</script> & more')


def test_long_texts_diff_word_by_word():
    a, b, edited = diff_texts(2_000)
    result = word_diff(a, edited)
    assert sides(result.html) == (a, edited)
    assert 0 < result.html.count("<del>") <= 60  # 3% of 2,000 words edited, each a small change
    assert sides(word_diff(a, b).html) == (a, b)


def test_many_distinct_words_past_the_surrogate_range():
    # Each distinct word is one character to the diff; 70,000 of them go past U+D800.
    old = " ".join(f"w{i}" for i in range(35_000))
    new = " ".join(f"v{i}" for i in range(35_000)) + " w34999"
    assert sides(word_diff(old, new, max_words=100_000).html) == (old, new)


def test_the_time_limit_keeps_the_diff_correct_but_coarser():
    a, b, _ = diff_texts(10_000)
    result = word_diff(a, b, budget_s=0.001)
    assert result.timed_out and not result.too_large
    assert sides(result.html) == (a, b)


def test_texts_past_the_cap_are_not_diffed():
    result = word_diff("one two three four", "one two three five six", max_words=4)
    assert result.too_large and result.html == "" and result.words == 5


@pytest.mark.django_db
def test_the_datapoint_page_says_when_a_diff_is_too_large(client_logged_in, monkeypatch):
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    run = RunFactory(evaluation=evaluation)
    datapoint = DatapointFactory(evaluation=evaluation, created=run.started_at, reference_output="short reference")
    InferenceFactory(run=run, datapoint=datapoint, output="a long <script>output</script> of many words")
    monkeypatch.setattr(diff, "MAX_WORDS", 5)
    body = client_logged_in.get(reverse("datapoint_detail", args=["qa", datapoint.id])).content.decode()
    assert "Diff too large to show (6 words in the longer text): the full texts are shown above." in body
    assert "a long &lt;script&gt;output&lt;/script&gt; of many words" in body  # the full output, escaped
    assert "<script>output" not in body
