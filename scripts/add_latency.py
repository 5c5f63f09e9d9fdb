# Single-add latency (infer=true) against a running hippo server: p50/p95 over N sequential adds.
import json, sys, time, urllib.request, statistics
base, n = sys.argv[1], int(sys.argv[2])
lat = []
for i in range(n):
    body = json.dumps({"user_id": "lat", "infer": True, "messages": [{"role": "user", "name": "Ana",
        "content": f"I bought a new plant today, number {i}, a small fern."}]}).encode()
    req = urllib.request.Request(base + "/v1/memories", data=body, headers={"content-type": "application/json"})
    t = time.perf_counter(); urllib.request.urlopen(req).read(); lat.append((time.perf_counter() - t) * 1e3)
lat.sort()
print(json.dumps({"n": n, "p50_ms": round(statistics.median(lat), 2), "p95_ms": round(lat[int(0.95 * n) - 1], 2)}))
