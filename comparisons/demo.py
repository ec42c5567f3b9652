"""Loads the demo data in comparisons/demo_data/demo.json (written by fixtures/generate_demo.py). Idempotent.

The file is package data, so an installed wheel loads the demo too."""

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.dateparse import parse_datetime

from comparisons.launch import launchers_group
from comparisons.models import (
    Datapoint,
    Dataset,
    Evaluation,
    EvaluationRun,
    Evaluator,
    Feedback,
    Function,
    Inference,
    evaluator_snapshot,
)
from comparisons.reviewers import reviewers_group

DEMO_FILE = Path(__file__).resolve().parent / "demo_data" / "demo.json"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "evalcompare-demo"


@dataclass
class DemoLoad:
    created: dict[str, int]
    username: str
    password: str | None  # None when the login already existed (its password is left alone)
    updated: dict[str, int] = field(default_factory=dict)


def _update_judge_config(evaluator, config: dict) -> bool:
    """Bring an existing demo judge's config (model, prompt) up to the file's; keys the file does not
    set (a base_url or api_key added to run the judge) are kept. Returns whether anything changed."""
    merged = {**(evaluator.config or {}), **config}
    if merged == evaluator.config:
        return False
    evaluator.config = merged
    evaluator.save(update_fields=["config"])
    return True


def _insert(model, objects) -> int:
    """Insert rows whose ids are new; existing ids are left untouched. Returns how many were new."""
    ids = [str(o.pk) for o in objects]
    existing = {str(pk) for pk in model.objects.filter(pk__in=ids).values_list("pk", flat=True)}
    fresh = [o for o in objects if str(o.pk) not in existing]
    model.objects.bulk_create(fresh, batch_size=1000)
    return len(fresh)


@transaction.atomic
def load_demo(path: Path = DEMO_FILE) -> DemoLoad:
    """Create the demo functions, datasets, evaluations, runs, inferences and feedback, and a login."""
    data = json.loads(Path(path).read_text())
    created = {}
    functions = {}
    for item in data["functions"]:
        functions[item["name"]], new = Function.objects.get_or_create(
            name=item["name"], defaults={"kind": item["kind"], "description": item["description"]}
        )
        created["functions"] = created.get("functions", 0) + new
    datasets = {}
    for item in data["datasets"]:
        datasets[item["name"]], new = Dataset.objects.get_or_create(
            name=item["name"], defaults={"description": item["description"]}
        )
        created["datasets"] = created.get("datasets", 0) + new
    evaluations = {}
    created["evaluations"] = created["evaluators"] = 0
    updated = {"judge configs": 0}
    for item in data["evaluations"]:
        evaluation, new = Evaluation.objects.get_or_create(
            name=item["name"],
            defaults={"function": functions[item["function"]], "dataset": datasets[item["dataset"]],
                      "description": item["description"], "prompt_template": item["prompt_template"]},
        )
        evaluations[item["name"]] = evaluation
        created["evaluations"] += new
        for spec in item["evaluators"]:
            evaluator, new = Evaluator.objects.get_or_create(evaluation=evaluation, name=spec["name"], defaults=spec)
            created["evaluators"] += new
            if not new and spec["kind"] == Evaluator.Kind.LLM_JUDGE:
                updated["judge configs"] += _update_judge_config(evaluator, spec["config"])

    created["datapoints"] = _insert(Datapoint, [
        Datapoint(id=d["id"], dataset=datasets[d["dataset"]], function=functions[d["function"]], name=d["name"],
                  input=d["input"], reference_output=d["reference_output"], tags=d["tags"],
                  staled_at=parse_datetime(d["staled_at"]) if d["staled_at"] else None,
                  supersedes_id=d["supersedes"])
        for d in sorted(data["datapoints"], key=lambda d: d["id"])
    ])
    inputs = {d["id"]: d["input"] for d in data["datapoints"]}
    runs, inferences, feedback = [], [], []
    # The demo's scores were made by the demo's evaluators: each run records them as its snapshot.
    snapshots = {name: evaluator_snapshot(evaluation) for name, evaluation in evaluations.items()}
    for r in data["runs"]:
        runs.append(EvaluationRun(
            id=r["id"], evaluation=evaluations[r["evaluation"]], variant_name=r["variant_name"],
            status=r["status"], config=r["config"], tags=r["tags"], finished_at=parse_datetime(r["finished_at"]),
            evaluator_snapshot=snapshots[r["evaluation"]],
        ))
        for i in r["inferences"]:
            inferences.append(Inference(
                id=i["id"], run_id=r["id"], datapoint_id=i["datapoint"], input=inputs[i["datapoint"]],
                output=i["output"], variant_name=r["variant_name"], variant_pinned=i["variant_pinned"],
                latency_ms=i["latency_ms"], input_tokens=i["input_tokens"], output_tokens=i["output_tokens"],
                cost=Decimal(str(i["cost"])), error=i["error"], tags=i["tags"],
            ))
            feedback.extend(
                Feedback(id=f["id"], inference_id=i["id"], metric=f["metric"], value=f["value"],
                         source=f["source"], reason=f["reason"])
                for f in i["feedback"]
            )
    created["runs"] = _insert(EvaluationRun, runs)
    created["inferences"] = _insert(Inference, inferences)
    created["feedback"] = _insert(Feedback, feedback)

    User = get_user_model()
    password = None
    user = User.objects.filter(username=DEMO_USERNAME).first()
    if user is None:
        user = User.objects.create_superuser(DEMO_USERNAME, "demo@example.com", DEMO_PASSWORD)
        password = DEMO_PASSWORD
    # Correcting values needs the Reviewers group's permission (a superuser has it anyway; the group
    # shows how to grant it).
    user.groups.add(reviewers_group(), launchers_group())
    return DemoLoad(created=created, username=DEMO_USERNAME, password=password, updated=updated)
