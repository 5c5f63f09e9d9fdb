#!/usr/bin/env python3
"""Fits and checks the relevance calibration (`crates/hippo/src/relevance.rs`).

Relevance is the probability that a search result holds evidence for the
question, from the result's own cosine to the query only, so it means the
same whatever else was found and however large the store is.
It is a logistic regression over `features()` below, which must stay equal
to `relevance::features` in Rust.

Refit (a running release server, model dir as scripts/fetch-model.sh gives):

    target/release/hippo --db /tmp/fit.db serve --listen 127.0.0.1:8799 &
    python3 scripts/fit_relevance.py --base http://127.0.0.1:8799 \\
        --fit ../shared/data/locomo/locomo_dev.json \\
        --validate ../shared/data/realtalk/realtalk_dev.json \\
        --validate ../shared/data/beam_100k/beam_100k_dev.json \\
        --validate ../shared/data/memdaily/memdaily_dev.json \\
        --off-topic eval/off-topic-questions.json

then copy the printed coefficients into relevance.rs. Fit on one split,
judge on the others: the off-topic questions are never fitted on.

Data format: LoCoMo's (conversation.session_N turns with dia_id; qa with
evidence dia_ids). A result is labelled relevant when it shows an evidence
turn: its own dia_id or one in its excerpt (`sources`).
Standard library only.
"""
import argparse
import json
import math
import re
import sys
import urllib.request
from datetime import datetime

TOP_K = 10


def call(base, method, path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw else {}


def session_time(s):
    m = re.match(r"\s*(\d{1,2}):(\d{2})\s*([ap]m)\s+on\s+(\d{1,2})\s+(\w+),\s*(\d{4})", s or "", re.I)
    if not m:
        return s if re.match(r"\d{4}-\d{2}-\d{2}T", s or "") else None
    hh, mm, ap, day, mon, year = m.groups()
    dt = datetime.strptime(f"{day} {mon} {year} {hh}:{mm} {ap.upper()}", "%d %B %Y %I:%M %p")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def turns(conv):
    sessions = sorted(
        (int(k.split("_")[1]), v)
        for k, v in conv.items()
        if re.fullmatch(r"session_\d+", k) and isinstance(v, list)
    )
    for n, ts in sessions:
        when = session_time(conv.get(f"session_{n}_date_time"))
        for t in ts:
            yield when, t["speaker"], t["dia_id"], t.get("text", "")


def load(base, uid, conv):
    call(base, "DELETE", f"/v1/memories?user_id={uid}")
    items = []
    for when, speaker, dia, text in turns(conv):
        item = {
            "user_id": uid,
            "messages": [{"role": "user", "name": speaker, "content": text}],
            "metadata": {"dia_id": dia},
            "infer": False,
        }
        if when:
            item["event_time"] = when
        items.append(item)
    for b in range(0, len(items), 256):
        call(base, "POST", "/v1/memories/batch", {"items": items[b : b + 256]})


def shown(result):
    ids = {(result.get("metadata") or {}).get("dia_id")}
    for s in result.get("sources") or []:
        ids.add((s.get("metadata") or {}).get("dia_id"))
    return ids


def own_text(result):
    """The text of the memory that matched (not its excerpt)."""
    for s in result.get("sources") or []:
        if s["id"] == result["id"]:
            return s["memory"]
    return result["memory"]


def features(row):
    """Must equal `relevance::features` in crates/hippo/src/relevance.rs.

    Only the cosine: BM25 separated evidence better on the fit split, but
    its scale follows the store's size (IDF), so a fit on long
    conversations over-rated long messages and under-rated small stores.
    The text length is collected to try as a feature; it did not help."""
    scores, _chars = row
    return [1.0, scores.get("vector") or 0.0]


def collect(base, path, off_topic):
    """((channel scores, own text length), label, relevance the server
    reported) per result,
    for the split's questions and for the off-topic questions."""
    on, off = [], []
    for sample in json.load(open(path)):
        uid = "fit-" + sample["sample_id"]
        load(base, uid, sample["conversation"])
        for q in sample["qa"]:
            ev = set(q.get("evidence") or [])
            if not ev or q.get("category") == 5:
                continue
            res = call(base, "POST", "/v1/search", {"user_id": uid, "query": q["question"], "top_k": TOP_K})
            for r in res["results"]:
                on.append(((r["scores"], len(own_text(r))), 1 if shown(r) & ev else 0, r.get("relevance")))
        for question in off_topic:
            res = call(base, "POST", "/v1/search", {"user_id": uid, "query": question, "top_k": TOP_K})
            for r in res["results"]:
                off.append(((r["scores"], len(own_text(r))), 0, r.get("relevance")))
        call(base, "DELETE", f"/v1/memories?user_id={uid}")
    return on, off


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def fit(rows, ridge=1e-3, steps=50):
    """Logistic regression by Newton's method (a tiny ridge keeps it stable)."""
    xs = [(features(s), y) for s, y, _ in rows]
    d = len(xs[0][0])
    w = [0.0] * d
    for _ in range(steps):
        g = [0.0] * d
        h = [[ridge if i == j else 0.0 for j in range(d)] for i in range(d)]
        for x, y in xs:
            p = sigmoid(sum(a * b for a, b in zip(w, x)))
            for i in range(d):
                g[i] += (p - y) * x[i]
                for j in range(d):
                    h[i][j] += p * (1 - p) * x[i] * x[j]
        for i in range(d):
            g[i] += ridge * w[i]
        step = solve(h, g)
        w = [a - b for a, b in zip(w, step)]
        if max(abs(s) for s in step) < 1e-9:
            break
    return w


def solve(a, b):
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def predict(w, x):
    return sigmoid(sum(a * b for a, b in zip(w, x)))


def auc(scored):
    pos = sorted(p for p, y in scored if y)
    neg = sorted(p for p, y in scored if not y)
    if not pos or not neg:
        return None
    # Probability a random positive outranks a random negative (ties half).
    wins, j, k = 0.0, 0, 0
    for p in pos:
        while j < len(neg) and neg[j] < p:
            j += 1
        k = j
        while k < len(neg) and neg[k] == p:
            k += 1
        wins += j + (k - j) / 2
    return wins / (len(pos) * len(neg))


def report(name, prob, on, off, thresholds):
    """Calibration and threshold effects of `prob(row, served)`."""
    scored = [(prob(x, r), y) for x, y, r in on]
    n = len(scored)
    brier = sum((p - y) ** 2 for p, y in scored) / n
    bins = []
    for b in range(10):
        inb = [(p, y) for p, y in scored if min(int(p * 10), 9) == b]
        if inb:
            bins.append({
                "bin": f"{b / 10:.1f}-{(b + 1) / 10:.1f}", "n": len(inb),
                "mean_predicted": round(sum(p for p, _ in inb) / len(inb), 3),
                "share_relevant": round(sum(y for _, y in inb) / len(inb), 3),
            })
    ece = sum(b["n"] * abs(b["mean_predicted"] - b["share_relevant"]) for b in bins) / n
    off_p = [prob(x, r) for x, _, r in off]
    evidence = [p for p, y in scored if y]
    at = {}
    for t in thresholds:
        at[str(t)] = {
            "evidence_hits_kept": round(sum(p >= t for p in evidence) / len(evidence), 4),
            "question_results_kept": round(sum(p >= t for p, _ in scored) / n, 4),
            "off_topic_results_dropped": round(sum(p < t for p in off_p) / len(off_p), 4) if off_p else None,
        }
    return {
        "split": name, "results": n, "share_relevant": round(sum(y for _, y in scored) / n, 4),
        "auc": round(auc(scored), 4), "brier": round(brier, 4), "ece": round(ece, 4),
        "off_topic_results": len(off_p), "calibration": bins, "at_threshold": at,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8799")
    ap.add_argument("--fit", action="append", required=True, help="split to fit on (repeatable)")
    ap.add_argument("--validate", action="append", default=[], help="splits to judge on (repeatable)")
    ap.add_argument("--off-topic", required=True, help="JSON file with {questions: [...]}")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--dump", help="also write the collected rows to this JSON file")
    ap.add_argument("--check", action="store_true",
                    help="judge the relevance the server returns instead of a new fit")
    args = ap.parse_args()
    off_topic = json.load(open(args.off_topic))["questions"]
    rows = {path: collect(args.base, path, off_topic) for path in args.fit + args.validate}
    if args.check:
        def prob(row, served):
            return served
    else:
        w = fit([r for path in args.fit for r in rows[path][0]])
        print(json.dumps({"coefficients": [round(c, 4) for c in w]}))

        def prob(row, served):
            return predict(w, features(row))
    out = []
    for path, (on, off) in rows.items():
        name = path + (" (fit)" if path in args.fit and not args.check else "")
        out.append(report(name, prob, on, off, args.thresholds))
    print(json.dumps(out, indent=1))
    if args.dump:
        json.dump(rows, open(args.dump, "w"))


if __name__ == "__main__":
    sys.exit(main())
