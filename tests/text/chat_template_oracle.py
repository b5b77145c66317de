"""Oracle for the chat-template tests: renders every template of TEMPLATES_DIR with every message
list of MESSAGES the way Hugging Face transformers does (jinja2 ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, raise_exception, tojson, strftime_now), into OUT.json:
{template: {case: {"text": ...} | {"error": message, "raised": bool}}}.

Usage: /usr/bin/python3 chat_template_oracle.py TEMPLATES_DIR MESSAGES OUT.json
"""
import json
import os
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError as e:
    sys.exit(f"chat_template_oracle: python3 jinja2 is missing ({e}); run scripts/setup.sh "
             "(it installs python3-jinja2)")


class Raised(Exception):
    """raise_exception() from a template: the renderer must throw this exact message."""


def raise_exception(message):
    raise Raised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Hugging Face's override of jinja's tojson: no HTML escaping, keys in insertion order.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def context(case, tokens):
    # As apply_chat_template passes it: tools=None when absent, special tokens only when set.
    ctx = {"messages": case["messages"], "tools": case.get("tools"),
           "add_generation_prompt": case["add_generation_prompt"]}
    for key in ("bos_token", "eos_token"):
        if tokens.get(key) is not None:
            ctx[key] = tokens[key]
    return ctx


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    templates_dir, messages_path, out_path = sys.argv[1:]
    if os.path.exists(out_path):  # never leave a stale answer behind a failed run
        os.remove(out_path)
    with open(messages_path, encoding="utf-8") as f:
        cases = json.load(f)
    env = make_env()
    results = {}
    for file in sorted(os.listdir(templates_dir)):
        if not file.endswith(".jinja"):
            continue
        name = file[: -len(".jinja")]
        with open(os.path.join(templates_dir, file), encoding="utf-8", newline="") as f:
            template = env.from_string(f.read())
        tokens_path = os.path.join(templates_dir, name + ".tokens.json")
        tokens = {}
        if os.path.exists(tokens_path):
            with open(tokens_path, encoding="utf-8") as f:
                tokens = json.load(f)
        per_case = {}
        for case in cases:
            try:
                per_case[case["name"]] = {"text": template.render(**context(case, tokens))}
            except Raised as e:
                per_case[case["name"]] = {"error": str(e), "raised": True}
            except Exception as e:  # noqa: BLE001 - any render failure is an expected outcome
                per_case[case["name"]] = {"error": f"{type(e).__name__}: {e}", "raised": False}
        results[name] = per_case
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False, indent=1)
    print(f"chat_template_oracle: jinja2 {jinja2.__version__}, {len(results)} templates x "
          f"{len(cases)} message lists -> {out_path}")


if __name__ == "__main__":
    main()
