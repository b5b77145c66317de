#!/usr/bin/env python3
"""Counts the custom_ids whose answer text in batch output B is the same as in batch output A
(OpenAI Batch JSONL; an error line's answer is None): python3 batch_answers_cmp.py A B"""
import json
import sys


def load(path):
    out = {}
    for r in map(json.loads, open(path)):
        body = (r.get("response") or {}).get("body") or {}
        ch = (body.get("choices") or [{}])[0]
        out[r["custom_id"]] = ch.get("text") if "text" in ch else (ch.get("message") or {}).get("content")
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"answers: {len(b)} of {len(a)}, the same as one rank's: {sum(a[k] == b.get(k) for k in a)}")
