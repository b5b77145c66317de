#!/usr/bin/env python3
"""The end-to-end tests' oracle for grammar-constrained output (guided_grammar, ebnf): a reader of
the GBNF the server takes (rules `name ::= ...`, `|`, groups, `* + ? {m} {m,} {m,n}`, "literals"
and [classes] with the usual escapes, `.`, `#` comments) and a memoized backtracking matcher over
code points that says whether a text is a string of the grammar (`member`) or the start of one
(`viable`). Written apart from the server's C++ (no left recursion, every rule able to end: the
grammars the tests send).

  grammar_check.py GRAMMAR_FILE TEXT_FILE   exits 0 when the text is a string of the grammar
"""
import re
import sys

_ESC = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "b": "\b", "0": "\0"}


class Grammar:
    def __init__(self, text):
        self.s, self.i, self.rules = text, 0, {}
        while True:
            self._space()
            if self.i >= len(self.s):
                break
            name = self._name()
            self._space()
            assert self.s.startswith("::=", self.i), ("::= expected", self.i)
            self.i += 3
            self.rules[name] = self._alt()
        assert "root" in self.rules

    # ---- reading
    def _space(self):
        while self.i < len(self.s):
            if self.s[self.i] == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            elif self.s[self.i].isspace():
                self.i += 1
            else:
                break

    def _name(self):
        m = re.compile(r"[A-Za-z0-9_-]+").match(self.s, self.i)
        self.i = m.end()
        return m.group()

    def _starts_rule(self):
        return re.compile(r"[A-Za-z0-9_-]+\s*::=").match(self.s, self.i) is not None

    def _char(self):
        c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return c
        e = self.s[self.i]
        self.i += 1
        if e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            v = int(self.s[self.i:self.i + n], 16)
            self.i += n
            return chr(v)
        return _ESC.get(e, e)

    def _alt(self):
        alts = [self._seq()]
        self._space()
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            alts.append(self._seq())
            self._space()
        return ("alt", alts)

    def _seq(self):
        items = []
        while True:
            self._space()
            if self.i >= len(self.s) or self.s[self.i] in "|)" or self._starts_rule():
                return ("seq", items)
            node = self._primary()
            while True:
                self._space()
                c = self.s[self.i] if self.i < len(self.s) else ""
                if c == "*":
                    node, self.i = ("rep", node, 0, None), self.i + 1
                elif c == "+":
                    node, self.i = ("rep", node, 1, None), self.i + 1
                elif c == "?":
                    node, self.i = ("rep", node, 0, 1), self.i + 1
                elif c == "{":
                    m = re.compile(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}").match(self.s, self.i)
                    lo = int(m.group(1))
                    hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                    node, self.i = ("rep", node, lo, hi), m.end()
                else:
                    break
            items.append(node)

    def _primary(self):
        c = self.s[self.i]
        if c == '"':
            self.i += 1
            lit = ""
            while self.s[self.i] != '"':
                lit += self._char()
            self.i += 1
            return ("lit", lit)
        if c == "[":
            self.i += 1
            neg = self.s[self.i] == "^"
            self.i += neg
            ranges = []
            while self.s[self.i] != "]":
                lo = self._char()
                hi = lo
                if self.s[self.i] == "-" and self.s[self.i + 1] != "]":
                    self.i += 1
                    hi = self._char()
                ranges.append((ord(lo), ord(hi)))
            self.i += 1
            return ("cls", ranges, neg)
        if c == ".":
            self.i += 1
            return ("cls", [], True)
        if c == "(":
            self.i += 1
            node = self._alt()
            self._space()
            self.i += 1
            return node
        return ("ref", self._name())

    # ---- matching
    def _ends(self, node, s, i, memo):
        """The positions where a string of `node` starting at i can end."""
        kind = node[0]
        if kind == "lit":
            return {i + len(node[1])} if s.startswith(node[1], i) else set()
        if kind == "cls":
            if i < len(s) and (any(a <= ord(s[i]) <= b for a, b in node[1]) != node[2]):
                return {i + 1}
            return set()
        if kind == "ref":
            key = (node[1], i)
            if key not in memo:
                memo[key] = set()  # no left recursion in the tests' grammars
                memo[key] = self._ends(self.rules[node[1]], s, i, memo)
            return memo[key]
        if kind == "seq":
            at = {i}
            for kid in node[1]:
                at = set().union(*(self._ends(kid, s, p, memo) for p in at)) if at else set()
            return at
        if kind == "alt":
            return set().union(*(self._ends(kid, s, i, memo) for kid in node[1]))
        _, kid, lo, hi = node
        out, at, k = set(), {i}, 0
        while True:
            if k >= lo:
                new = at - out
                out |= at
                if not new and k > lo:
                    return out
            if hi is not None and k == hi:
                return out
            at = set().union(*(self._ends(kid, s, p, memo) for p in at)) if at else set()
            if not at:
                return out
            k += 1

    def _viable(self, node, s, i, memo, vmemo):
        """s[i:] is the start of some string of node."""
        if i == len(s):
            return True
        kind = node[0]
        if kind == "lit":
            return node[1].startswith(s[i:])
        if kind == "cls":
            return len(s) - i == 1 and bool(self._ends(node, s, i, memo))
        if kind == "ref":
            key = (node[1], i)
            if key not in vmemo:
                vmemo[key] = False
                vmemo[key] = self._viable(self.rules[node[1]], s, i, memo, vmemo)
            return vmemo[key]
        if kind == "seq":
            at = {i}
            for kid in node[1]:
                if any(self._viable(kid, s, p, memo, vmemo) for p in at):
                    return True
                at = set().union(*(self._ends(kid, s, p, memo) for p in at)) if at else set()
            return len(s) in at
        if kind == "alt":
            return any(self._viable(kid, s, i, memo, vmemo) for kid in node[1])
        _, kid, lo, hi = node
        at, seen, k = {i}, set(), 0
        while hi is None or k < hi:
            if any(self._viable(kid, s, p, memo, vmemo) for p in at):
                return True
            if at <= seen:
                return False
            seen |= at
            at = set().union(*(self._ends(kid, s, p, memo) for p in at)) if at else set()
            k += 1
        return False

    def member(self, s):
        return len(s) in self._ends(("ref", "root"), s, 0, {})

    def viable(self, s):
        return self._viable(("ref", "root"), s, 0, {}, {})


if __name__ == "__main__":
    g = Grammar(open(sys.argv[1], encoding="utf-8").read())
    sys.exit(0 if g.member(open(sys.argv[2], encoding="utf-8").read()) else 1)
