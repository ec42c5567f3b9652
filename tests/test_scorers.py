import pytest
import sacrebleu
from rouge_score import rouge_scorer

from comparisons.runner import scorers
from comparisons.runner.openai_client import parse_judgement

CHAT = [{"type": "text", "text": "The cat sat on the mat."}]


def test_output_text_reads_every_shape():
    assert scorers.output_text(CHAT) == "The cat sat on the mat."
    assert scorers.output_text({"raw": '{"a": 1}', "parsed": {"a": 1}}) == '{"a": 1}'
    assert scorers.output_text(None) == ""
    assert scorers.output_text({"b": 2, "a": 1}) == '{"a": 1, "b": 2}'


def test_exact_match_contains_regex():
    assert scorers.exact_match(CHAT, "The cat sat on the mat. ")
    assert not scorers.exact_match(CHAT, "the cat sat on the mat.")
    assert scorers.exact_match(CHAT, "the cat sat on the mat.", {"case_sensitive": False})
    assert scorers.contains(CHAT, "CAT SAT")
    assert not scorers.contains(CHAT, "dog")
    assert scorers.contains(CHAT, None, {"text": "mat"})
    assert scorers.regex(CHAT, None, {"pattern": r"\bsat\b"})
    assert not scorers.regex(CHAT, None, {"pattern": r"^sat"})
    with pytest.raises(ValueError, match="config.pattern"):
        scorers.regex(CHAT, None, {})


def test_json_valid_and_json_match():
    assert scorers.json_valid({"raw": '{"a": 1}', "parsed": {"a": 1}})
    assert not scorers.json_valid({"raw": '{"a": 1', "parsed": None})
    assert scorers.json_valid('[1, 2]') and not scorers.json_valid("[1, 2]", config={"require_object": True})
    reference = {"vendor": "Acme", "total": 10.5, "date": "2026-01-02", "currency": "EUR"}
    output = {"parsed": {"vendor": "Acme", "total": 10.5, "date": "02/01/2026", "currency": None}}
    assert scorers.json_match(output, reference) == 0.5
    assert scorers.json_match({"raw": "nope", "parsed": None}, reference) == 0.0
    assert scorers.json_match({"parsed": reference}, reference) == 1.0


def test_levenshtein_similarity():
    assert scorers.levenshtein_distance("kitten", "sitting") == 3
    assert scorers.levenshtein("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert scorers.levenshtein("", "") == 1.0 and scorers.levenshtein("abc", "") == 0.0


def test_bleu_and_rouge_l_agree_with_the_libraries():
    hypothesis = "the quick brown fox jumps over the lazy dog today"
    reference = "a quick brown fox jumped over the lazy dog"
    expected_bleu = sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100
    assert scorers.bleu(hypothesis, reference) == pytest.approx(expected_bleu)
    assert 0 < expected_bleu < 1
    expected_rouge = rouge_scorer.RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"].fmeasure
    assert scorers.rouge_l([{"type": "text", "text": hypothesis}], reference) == pytest.approx(expected_rouge)
    assert scorers.rouge_l(reference, reference) == pytest.approx(1.0)
    assert scorers.bleu(reference, reference) == pytest.approx(1.0)


@pytest.mark.parametrize("text, boolean, expected", [
    ('{"score": true, "reason": "fine"}', True, (1.0, "fine")),
    ('```json\n{"score": false}\n```', True, (0.0, "")),
    ("Yes.", True, (1.0, "")),
    ("FAIL: missing steps", True, (0.0, "")),
    ('{"score": 0.75, "reason": "mostly"}', False, (0.75, "mostly")),
    ("0.4", False, (0.4, "")),
])
def test_parse_judgement(text, boolean, expected):
    assert parse_judgement(text, boolean) == expected


@pytest.mark.parametrize("text, boolean", [("maybe", True), ('{"score": 0.5}', True), ("great", False), ("", True)])
def test_parse_judgement_refuses_malformed_answers(text, boolean):
    with pytest.raises(ValueError, match="malformed judge answer"):
        parse_judgement(text, boolean)


def test_import_callable_errors():
    assert scorers.import_callable("tests.sample_tasks:perfect")({"question": "q 3"}) == "answer 3"
    with pytest.raises(ImportError, match="not of the form"):
        scorers.import_callable("nodots")
    with pytest.raises(ImportError, match="has no attribute"):
        scorers.import_callable("tests.sample_tasks:missing")
    with pytest.raises(ImportError, match="not callable"):
        scorers.import_callable("tests.sample_tasks:broken")
