"""Selection from an imported dataset through the whole suite (real NATS, gRPC, services):
import, dedup, decontamination, TACOS tagging, clustering, comparative scoring through the
judge, quotas, the other methods on the same data, exports and provenance.

The planted dataset: five clusters (by "[tags: ...]" markers the FAKE tagger repeats), each item
with a hidden quality ("[quality: N]", which the FAKE judge scores by), bad answers padded to be
the longest. One big cluster and four small ones, so coverage tells methods apart.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from taxoforge.tokens import messages_tokens
from taxoforge_cli.main import main
from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import item_counts, jsonl, submit, wait

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

_WORDS = [
    "amber",
    "basalt",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "iris",
    "jasper",
    "kelp",
    "lagoon",
    "meadow",
    "nectar",
    "onyx",
    "prairie",
    "quartz",
    "reef",
    "sierra",
    "tundra",
    "umber",
    "violet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "anchor",
    "beacon",
    "canyon",
    "delta",
    "estuary",
    "falcon",
    "glacier",
    "heron",
    "island",
    "jungle",
    "kestrel",
    "lantern",
    "marsh",
    "nebula",
    "orchard",
    "pebble",
    "quarry",
    "raven",
    "savanna",
    "thistle",
    "upland",
    "valley",
    "walnut",
]
TOPICS = [
    ("python, debugging", "How do I fix the {a} {b} error in my Python {c} {d} script?", 60),
    ("astronomy", "Why does the {a} {b} star near {c} {d} look odd tonight?", 4),
    ("cooking, french", "Give me a French recipe with {a}, {b}, {c} and {d}.", 4),
    ("poetry, writing", "Write a short poem about {a} {b} at {c} {d}.", 4),
    ("law, contracts", "Is a contract about {a} {b} valid in {c} {d}?", 4),
]
BENCHMARK = [
    "Explain the difference between a stack and a queue with an everyday example please",
    "What is the capital of the country that hosted the first modern Olympic games",
]


def _query(template: str, rng: random.Random) -> str:
    a, b, c, d = rng.sample(_WORDS, 4)
    return template.format(a=a, b=b, c=c, d=d)


def planted_rows(seed: int = 7) -> tuple[list[Any], dict[str, int]]:
    """Rows of a JSON Lines file (dicts, or raw strings for broken lines) and the item id
    (r<row>) -> hidden quality of every well-formed, unique, clean row."""
    rng = random.Random(seed)
    rows: list[Any] = []
    quality: dict[str, int] = {}
    for tags, template, size in TOPICS:
        for _ in range(size):
            q = rng.randint(10, 95)
            query = f"{_query(template, rng)} [tags: {tags}]"
            padding = " It also depends." * ((100 - q) // 4)  # the worse, the longer
            answer = f"Here is the answer. [quality: {q}]{padding}"
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": query},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
            quality[f"r{len(rows):07d}"] = q
    first = rows[0]["messages"]
    # An exact duplicate (case and punctuation aside) and a near duplicate of the first record
    # (dedup compares query and answer: another answer to the same query is not one).
    answer = first[1]["content"]
    rows.append({"instruction": first[0]["content"].upper() + "!!", "input": "", "output": answer})
    rows.append({"instruction": first[0]["content"] + " please", "input": "", "output": answer})
    # Two records that contain a benchmark prompt.
    for prompt in BENCHMARK:
        rows.append(
            {
                "conversations": [
                    {"from": "human", "value": f"Quiz: {prompt}?"},
                    {"from": "gpt", "value": "Sure."},
                ]
            }
        )
    # Malformed rows: not JSON, unknown keys, a conversation that ends with the user.
    rows.append("{not json")
    rows.append({"foo": 1})
    rows.append({"messages": [{"role": "user", "content": "hello?"}]})
    return rows, quality


def to_jsonl(rows: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def upload(api: httpx.Client, name: str, data: bytes) -> str:
    resp = api.post("/v1/uploads", params={"name": name}, content=data)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["upload"])


def select(api: httpx.Client, source: dict[str, Any], **selection: Any) -> dict[str, Any]:
    resp = api.post(
        "/v1/selections", json={"name": "planted", "source": source, "selection": selection}
    )
    assert resp.status_code == 201, resp.text
    return wait(api, resp.json()["id"], limit_s=120)


@pytest.fixture(scope="module")
def import_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imports")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, import_root: Path) -> Iterator[Stack]:
    """The suite, with the selector allowed to read files under ``import_root``."""
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("stack"),
        llm="fake",
        sync_always=False,
        # Checks in the prepare step's worker process from the first row, as a large import's.
        env={
            **FAST_RETRIES,
            "TAXOFORGE_IMPORT_ROOTS": str(import_root),
            "TAXOFORGE_SCREEN_WORKER_AFTER_ROWS": "0",
        },
    )
    with Stack(config) as running:
        yield running


@pytest.fixture(scope="module")
def planted(stack: Stack) -> dict[str, Any]:
    """The planted dataset selected with TACOS (sqrt quotas, a budget of 10)."""
    rows, quality = planted_rows()
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        resp = api.put("/v1/benchmarks/quiz", content="\n".join(BENCHMARK).encode())
        assert resp.status_code == 201, resp.text
        job = select(
            api,
            {"upload": upload(api, "planted.jsonl", to_jsonl(rows))},
            budget=10,
            quota="sqrt",
            clusters=5,
            decontaminate=["quiz"],
        )
    return {"job": job, "quality": quality, "rows": rows}


def test_tacos_beats_random_and_longest_on_planted_data(planted: dict[str, Any]) -> None:
    job = planted["job"]
    assert job["state"] == "succeeded", job
    report = job["selection"]
    methods = {m["method"]: m for m in report["methods"]}
    assert set(methods) == {"tacos", "deita", "alpagasus", "random", "longest", "score"}
    tacos, rnd, longest = methods["tacos"], methods["random"], methods["longest"]
    assert tacos["chosen"] and not rnd["chosen"]
    assert tacos["records"] == rnd["records"] == longest["records"] == 10
    assert tacos["mean_quality"] > rnd["mean_quality"]
    assert tacos["mean_quality"] > longest["mean_quality"]
    assert tacos["clusters_covered"] == 5
    assert tacos["clusters_covered"] > rnd["clusters_covered"]
    assert tacos["clusters_covered"] > longest["clusters_covered"]


def test_the_selected_records_are_the_best_of_each_cluster_by_hidden_quality(
    api: httpx.Client, planted: dict[str, Any]
) -> None:
    job, quality = planted["job"], planted["quality"]
    provenance = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    assert len(provenance) == job["selection"]["selected"] == 10
    by_cluster: dict[int, list[str]] = {}
    for record in provenance:
        by_cluster.setdefault(record["cluster"], []).append(record["item_id"])
    assert len(by_cluster) == 5
    clusters = {c["id"]: c for c in job["selection"]["clusters"]}
    assert sum(c["quota"] for c in clusters.values()) == 10
    for cluster, kept in by_cluster.items():
        assert len(kept) == clusters[cluster]["quota"] == clusters[cluster]["selected"]
    # The big cluster's kept records are its best by hidden quality (the judge's scores follow
    # it, each sample against the cluster's reference, both orders).
    big = max(by_cluster, key=lambda c: clusters[c]["size"])
    members = [p for p in provenance if p["cluster"] == big]
    tops = sorted(
        (q for i, q in quality.items() if i in _cluster_items(job, big, api)), reverse=True
    )
    assert sorted((quality[m["item_id"]] for m in members), reverse=True) == tops[: len(members)]


def _cluster_items(job: dict[str, Any], cluster: int, api: httpx.Client) -> set[str]:
    provenance = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    dropped = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    kept = {p["item_id"] for p in provenance if p["cluster"] == cluster}
    others = {
        d["item_id"]
        for d in dropped
        if d["reason"] == "not_selected" and f"cluster {cluster} " in d["detail"]
    }
    return kept | others


def _tokens_by_item(api: httpx.Client, job: dict[str, Any]) -> dict[str, int]:
    """Each kept record's o200k tokens, counted here from its SFT export's messages."""
    sft = jsonl(api, f"/v1/jobs/{job['id']}/datasets/sft")
    return {r["id"].split("/", 1)[1]: messages_tokens(r["messages"]) for r in sft}


def test_a_budget_in_records_counts_the_tokens_of_what_it_keeps(
    api: httpx.Client, planted: dict[str, Any]
) -> None:
    # Screening leaves the counts to the select step, which counts the records the methods
    # pick: the report, the measures and the provenance hold exact counts all the same.
    job = planted["job"]
    provenance = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    expected = _tokens_by_item(api, job)
    assert {p["item_id"]: p["tokens"] for p in provenance} == expected
    assert job["selection"]["selected_tokens"] == sum(expected.values()) > 0
    assert all(m["tokens"] > 0 for m in job["selection"]["methods"] if m["records"])


def test_a_budget_in_tokens_keeps_within_it_with_exact_counts(
    api: httpx.Client, planted: dict[str, Any]
) -> None:
    job = select(
        api,
        {"upload": upload(api, "planted-tokens.jsonl", to_jsonl(planted["rows"]))},
        budget=600,
        budget_unit="tokens",
        clusters=5,
    )
    assert job["state"] == "succeeded", job
    provenance = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    expected = _tokens_by_item(api, job)
    assert {p["item_id"]: p["tokens"] for p in provenance} == expected
    assert 0 < job["selection"]["selected_tokens"] == sum(expected.values()) <= 600
    for method in job["selection"]["methods"]:
        assert method["tokens"] <= 600, method


def test_import_dedup_and_decontamination_are_reported_with_counts(
    api: httpx.Client, planted: dict[str, Any]
) -> None:
    job = planted["job"]
    report = job["selection"]
    imported = report["imported"]
    total = len(planted["rows"])
    assert imported["rows"] == total
    assert imported["malformed"] == 3
    assert [e["row"] for e in imported["errors"]] == [total - 2, total - 1, total]
    assert "JSON" in imported["errors"][0]["reason"]
    assert imported["shapes"] == {"messages": 76, "alpaca": 2, "sharegpt": 2}
    assert report["duplicates"] == 1
    assert report["near_duplicates"] == 1
    assert report["contaminated"] == {"quiz": 2}
    assert report["candidates"] == 76
    dropped = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    reasons = [d["reason"] for d in dropped]
    assert reasons.count("malformed") == 3
    assert reasons.count("duplicate") == reasons.count("near_duplicate") == 1
    assert reasons.count("contaminated") == 2
    assert reasons.count("not_selected") == 76 - 10
    # Nothing is lost: every row is kept or dropped with its reason.
    kept = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    assert len(kept) + len(dropped) == total


def test_tags_are_normalized_and_comparisons_run_through_the_judge(
    stack: Stack, planted: dict[str, Any]
) -> None:
    job = planted["job"]
    tacos = job["selection"]["tacos"]
    assert tacos["tagged"] == 76 and tacos.get("tag_failures", 0) == 0
    # python, debugging, astronomy, cooking, french, poetry, writing, law, contracts: all
    # frequent enough to stay, none near-synonyms
    assert tacos["raw_tags"] == tacos["kept_tags"] == 9
    # Every sample but the five references against its reference, both orders.
    assert tacos["comparisons"] == 76 - 5
    assert tacos["judge_calls"] == 2 * (76 - 5)
    counts = item_counts(stack.nats_url, job["id"])
    # Tags are stored a page (of up to 64 queries) at a time: 76 queries make 2 pages.
    assert counts["tags"] == 2 and counts["comparison"] == 71
    steps = {s["stage"]: s for s in job["stages"]}
    assert steps["tag"]["done"] == 2 and steps["compare"]["done"] == 71
    # Every tag and comparison call is accounted (a reply asked again counts as a call too).
    assert job["usage"]["calls"] >= 76 + 2 * 71, (job["usage"], tacos)
    # The report's own figures are summed from the stored tag pages and comparisons: both are
    # in them, and they are what the model served.
    exact = job["selection"]["usage"]
    assert exact["calls"] == job["usage"]["calls"] >= 76 + 2 * 71, (exact, job["usage"])


def test_a_record_traces_to_its_row_verdicts_and_why_it_was_kept(
    api: httpx.Client, planted: dict[str, Any]
) -> None:
    job = planted["job"]
    sft = jsonl(api, f"/v1/jobs/{job['id']}/datasets/sft")
    assert len(sft) == 10
    item = sft[0]["id"].split("/", 1)[1]
    record = api.get(f"/v1/jobs/{job['id']}/records/{item}").json()
    assert record["status"] == "kept"
    assert record["row"] == int(item[1:])
    assert record["kept"].startswith("tacos: ")
    comparative = record["comparative"]
    assert "reference_of_cluster" in comparative or (
        len(comparative["sample_first"]) == 2 and len(comparative["reference_first"]) == 2
    )
    dropped = api.get(f"/v1/jobs/{job['id']}/records/r{len(planted['rows']):07d}").json()
    assert dropped["status"] == "dropped" and dropped["reason"] == "malformed"
    assert api.get(f"/v1/jobs/{job['id']}/records/r9999999").status_code == 404


def test_every_export_loads_and_the_card_describes_the_selection(
    api: httpx.Client, planted: dict[str, Any], tmp_path: Path
) -> None:
    job = planted["job"]
    paths = {d["path"] for d in job["datasets"]}
    for kind in ("sft", "openai-sft", "alpaca", "sharegpt", "preference", "openai-dpo"):
        assert f"data/{kind}.jsonl" in paths and f"data/{kind}.parquet" in paths
    assert {"README.md", "meta/provenance.jsonl", "meta/dropped.jsonl"} <= paths
    for fmt in ("jsonl", "parquet"):
        resp = api.get(f"/v1/jobs/{job['id']}/datasets/sft", params={"format": fmt})
        assert resp.status_code == 200
        path = tmp_path / f"sft.{fmt}"
        path.write_bytes(resp.content)
        loaded = load_dataset(
            "json" if fmt == "jsonl" else "parquet", data_files=str(path), split="train"
        )
        assert loaded.num_rows == 10
        assert loaded[0]["messages"][-1]["role"] == "assistant"
    card = api.get(f"/v1/jobs/{job['id']}/files/README.md")
    assert card.status_code == 200 and card.text.startswith("---\n")
    assert "tacos" in card.text
    chart = api.get(f"/v1/jobs/{job['id']}/files/images/quality.svg")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/svg+xml"
    assert "sandbox" in chart.headers["content-security-policy"]
    assert chart.text.startswith("<svg ")


def test_the_comparison_budget_bounds_the_judge_calls(
    api: httpx.Client, fake: FakeControl, planted: dict[str, Any]
) -> None:
    rows, _ = planted_rows(seed=8)
    job = select(
        api,
        {"upload": upload(api, "budgeted.jsonl", to_jsonl(rows))},
        budget=10,
        clusters=5,
        comparison_budget=20,
        seed=1,
    )
    assert job["state"] == "succeeded", job
    tacos = job["selection"]["tacos"]
    assert tacos["judge_calls"] <= 20 and job["selection"]["judge"]["calls"] <= 20
    # 20 calls pay for 6 comparisons with a retry each (3 calls), never for more calls
    assert tacos["comparisons"] == 6 and tacos["calls_per_comparison"] == 3
    assert tacos["unscored"] > 0  # the rest rank after the scored, by a seeded order
    assert job["selection"]["selected"] == 10


def test_parquet_alpaca_and_preference_rows_import(api: httpx.Client, fake: FakeControl) -> None:
    table = pa.Table.from_pylist(
        [
            {
                "instruction": f"Name a {w} animal [tags: animals]",
                "input": "",
                "output": f"A {w} cat. [quality: 80]",
                "prompt": None,
                "chosen": None,
                "rejected": None,
            }
            for w in _WORDS[:6]
        ]
        + [
            {
                "instruction": None,
                "input": None,
                "output": None,
                "prompt": f"Define {w} [tags: words]",
                "chosen": f"{w} is a word. [quality: 90]",
                "rejected": "No idea. [quality: 20]",
            }
            for w in _WORDS[6:12]
        ]
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    job = select(api, {"upload": upload(api, "mixed.parquet", buf.getvalue())}, clusters=2)
    assert job["state"] == "succeeded", job
    assert job["selection"]["imported"]["shapes"] == {"alpaca": 6, "preference": 6}
    assert job["selection"]["selected"] == 12  # no budget: everything that passes
    preference = jsonl(api, f"/v1/jobs/{job['id']}/datasets/preference")
    assert len(preference) == 6
    assert all(p["chosen"][0]["role"] == "assistant" for p in preference)


def test_a_path_import_reads_only_under_the_import_roots(
    api: httpx.Client, fake: FakeControl, import_root: Path, tmp_path: Path
) -> None:
    rows, _ = planted_rows(seed=9)
    inside = import_root / "data.jsonl"
    inside.write_bytes(to_jsonl(rows[:12]))
    job = select(api, {"path": str(inside)}, clusters=1)
    assert job["state"] == "succeeded", job
    assert job["selection"]["imported"]["rows"] == 12

    outside = tmp_path / "secret.jsonl"
    outside.write_bytes(to_jsonl(rows[:3]))
    job = select(api, {"path": str(outside)})
    assert job["state"] == "failed"
    assert "outside the import roots" in job["error"]


def test_a_file_with_no_valid_row_fails_with_its_row_numbers(
    api: httpx.Client, fake: FakeControl
) -> None:
    job = select(api, {"upload": upload(api, "bad.jsonl", b'{"foo": 1}\n{"messages": []}\n')})
    assert job["state"] == "failed"
    assert "row 1" in job["error"] and "row 2" in job["error"]
    assert job["selection"]["imported"]["malformed"] == 2


def test_a_url_import_reads_the_file_over_http(
    api: httpx.Client, fake: FakeControl, tmp_path: Path
) -> None:
    rows, _ = planted_rows(seed=10)
    (tmp_path / "data.jsonl.gz").write_bytes(gzip.compress(to_jsonl(rows[:20])))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/data.jsonl.gz"
            job = select(api, {"url": url}, clusters=2)
            missing = select(api, {"url": url.replace("data", "nothing")})
        finally:
            server.shutdown()
    assert job["state"] == "succeeded", job
    assert job["selection"]["imported"]["rows"] == 20
    assert job["selection"]["imported"]["name"] == "data.jsonl.gz"
    assert missing["state"] == "failed" and "404" in missing["error"]


def test_a_generation_job_can_be_selected_with_open_tags_and_comparisons(
    api: httpx.Client, fake: FakeControl
) -> None:
    job = wait(
        api,
        submit(
            api,
            count=8,
            seed=41,
            selection={"cluster_by": "tags", "scoring": "comparative", "budget": 4},
            max_candidates=1.0,
        )["id"],
        limit_s=120,
    )
    assert job["state"] == "succeeded", job
    steps = {s["stage"]: s for s in job["stages"]}
    assert steps["tag"]["done"] == 1  # one page of 8 queries
    assert steps["compare"]["done"] + steps["compare"]["failed"] == steps["compare"]["planned"]
    assert steps["compare"]["done"] > 0
    assert job["selection"]["selected"] == 4
    assert len(jsonl(api, f"/v1/jobs/{job['id']}/datasets/sft")) == 4


def test_the_cli_uploads_selects_and_writes_the_dataset_folder(
    stack: Stack, fake: FakeControl, tmp_path: Path
) -> None:
    rows, _ = planted_rows(seed=11)
    source = tmp_path / "mine.jsonl"
    source.write_bytes(to_jsonl(rows[:30]))
    out = tmp_path / "out"
    main(
        [
            "select",
            str(source),
            "--budget",
            "5",
            "--gateway",
            stack.gateway_url,
            "--out",
            str(out),
        ]
    )
    (folder,) = out.iterdir()
    assert (folder / "README.md").exists()
    assert len((folder / "data" / "sft.jsonl").read_text().splitlines()) == 5
    assert (folder / "data" / "sft.parquet").exists()
    assert (folder / "meta" / "provenance.jsonl").exists()


def test_a_row_over_the_record_limit_is_dropped_and_the_rest_is_selected(
    api: httpx.Client, fake: FakeControl
) -> None:
    # A 9 MiB answer: as a compare task it would be over the stack's 8 MB NATS max payload.
    rows, _ = planted_rows(seed=12)
    rows = rows[:20]
    big = "Here is the answer. [quality: 50]" + " It depends." * ((9 << 20) // 12)
    rows[4] = {
        "messages": [
            {"role": "user", "content": "Why is this answer so long? [tags: python, debugging]"},
            {"role": "assistant", "content": big},
        ]
    }
    rows[9] = "{broken"
    job = select(api, {"upload": upload(api, "with-huge.jsonl", to_jsonl(rows))}, clusters=1)

    assert job["state"] == "succeeded", job
    imported = job["selection"]["imported"]
    assert imported["rows"] == 20 and imported["malformed"] == 2
    errors = {e["row"]: e["reason"] for e in imported["errors"]}
    assert "over the 256 KiB limit of one record" in errors[5] and "JSON" in errors[10]
    dropped = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    by_item = {d["item_id"]: d for d in dropped}
    assert by_item["r0000005"]["reason"] == "too_large" and by_item["r0000005"]["row"] == 5
    assert by_item["r0000010"]["reason"] == "malformed" and by_item["r0000010"]["row"] == 10
    kept = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    assert len(kept) == job["selection"]["selected"] == 18
    assert len(kept) + len(dropped) == 20
