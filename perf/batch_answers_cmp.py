#!/usr/bin/env python3
"""Counts the custom_ids whose answer in batch output B is the same as in batch output A (OpenAI
Batch JSONL; an error line's answer is None):  python3 batch_answers_cmp.py A B [--detail]
--detail: for each answer that differs, the first differing token and, where the lines asked for
top logprobs, the margin between A's two best tokens there (a near tie, or a fault)."""
import json
import sys


def load(path):
    out = {}
    for r in map(json.loads, open(path)):
        body = (r.get("response") or {}).get("body") or {}
        out[r["custom_id"]] = (body.get("choices") or [None])[0]
    return out


def text(ch):
    if ch is None:
        return None
    return ch.get("text") if "text" in ch else (ch.get("message") or {}).get("content")


def margin(ch, pos):
    lp = ch.get("logprobs") or {}
    if "content" in lp:  # chat
        tops = [sorted((t["logprob"] for t in e.get("top_logprobs", [])), reverse=True) for e in lp["content"] or []]
    else:
        tops = [sorted(d.values(), reverse=True) for d in lp.get("top_logprobs") or []]
    if pos < len(tops) and len(tops[pos]) >= 2:
        return tops[pos][0] - tops[pos][1]
    return None


a, b = load(sys.argv[1]), load(sys.argv[2])
same = sum(text(a[k]) == text(b.get(k)) for k in a)
print(f"answers: {len(b)} of {len(a)}, the same as one rank's: {same}")
if "--detail" in sys.argv:
    for k in a:
        if text(a[k]) == text(b.get(k)) or a[k] is None or b.get(k) is None:
            continue
        ta, tb = a[k].get("token_ids") or [], b[k].get("token_ids") or []
        pos = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        m = margin(a[k], pos)
        print(f"  {k}: first differing token {pos} of {len(ta)} / {len(tb)}; margin of the two best there in A: "
              + (f"{m:.4g}" if m is not None else "not asked"))
