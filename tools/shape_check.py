"""Check the firmware's shape: short functions, shallow nesting, small modules, no import circles.

Usage: python tools/shape_check.py [ROOT]      (ROOT defaults to firmware/)

Every .py file under ROOT is a firmware module; its module name is its path under ROOT
(firmware/ is what goes on sys.path on the board), so firmware/ringws/kernels.py is
`ringws.kernels` and firmware/app/__init__.py is `app`.

The checks, each with its limit:
- function length (60): lines from the `def` line to the function's last line, docstring,
  comments and blank lines inside it included (decorators not). Methods and nested
  functions are checked on their own as well.
- nesting (5): the number of block statements a statement sits inside, counted within one
  function. The function's own body is level 0; every `if`, `for`, `while`, `try`, `with`,
  `match` (and its `case`), `async for`, `async with`, nested `def`/`class` opens one more
  level for the statements in it. `elif` and `else`/`except`/`finally` are at the level of
  the statement they belong to. A function's depth is the deepest level any of its block
  statements opens: `def f(): if a: for b in c: x()` is depth 2. Code outside functions is
  not counted.
- module length (600): lines in the file.
- import circles (none): a module imports another when it has `import X`,
  `from X import y` (an edge to X.y when that is a module, else to X) or a relative import
  naming one, anywhere in the file, inside functions, `try` and `if` included. Only edges
  between firmware modules count; `__import__(name)` with a computed name cannot be seen.
  Every elementary circle is listed once, starting at its alphabetically first module.

Prints one line per violation and exits 1 when there is any, 0 otherwise.
"""
import ast
import os
import sys

MAX_FUNCTION_LINES = 60
MAX_NESTING = 5
MAX_MODULE_LINES = 600

# Statements whose bodies are one level deeper; handlers and match cases are handled apart.
_BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith,
           ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
if hasattr(ast, "TryStar"):
    _BLOCKS += (ast.TryStar,)
if hasattr(ast, "Match"):
    _BLOCKS += (ast.Match,)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


class Violation:
    """One broken rule. `key` names it without line numbers or sizes, so that a list of
    known violations stays valid while the code around them changes."""

    def __init__(self, kind, path, line, name, value, limit, where=""):
        self.kind, self.path, self.line = kind, path, line
        self.name, self.value, self.limit = name, value, limit
        self.where = where

    @property
    def key(self):
        return (self.kind, self.path, self.name)

    def __str__(self):
        if self.kind == "function-length":
            what = "function %s is %d lines long" % (self.name, self.value)
        elif self.kind == "nesting":
            what = "function %s nests %d levels deep" % (self.name, self.value)
        elif self.kind == "module-length":
            what = "module is %d lines long" % self.value
        else:
            return "%s:%d: import circle %s (%s)" % (self.path, self.line, self.name, self.where)
        return "%s:%d: %s (limit %s)" % (self.path, self.line, what, self.limit)


def module_files(root):
    """{module name: path relative to root} for every .py file under root."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__pycache__")))
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                parts = rel[:-3].split("/")
                if parts[-1] == "__init__":
                    parts.pop()
                if parts:
                    out[".".join(parts)] = rel
    return out


def block_depth(stmts, level=0):
    """The deepest nesting level opened by a block statement among stmts (see the docstring)."""
    deepest = level
    for node in stmts:
        if isinstance(node, ast.If):
            deepest = max(deepest, block_depth(node.body, level + 1))
            rest = node.orelse
            # `elif` sits at its `if`'s column; `else:` + `if` is one level deeper.
            if len(rest) == 1 and isinstance(rest[0], ast.If) \
                    and rest[0].col_offset == node.col_offset:
                deepest = max(deepest, block_depth(rest, level))
            else:
                deepest = max(deepest, block_depth(rest, level + 1))
        elif hasattr(ast, "Match") and isinstance(node, ast.Match):
            for case in node.cases:
                deepest = max(deepest, block_depth(case.body, level + 2))
        elif isinstance(node, _BLOCKS):
            for field in ("body", "orelse", "finalbody"):
                deepest = max(deepest, block_depth(getattr(node, field, []), level + 1))
            for h in getattr(node, "handlers", []):
                deepest = max(deepest, block_depth(h.body, level + 1))
    return deepest


def _functions(tree):
    """(qualified name, node) for every function, methods and nested functions included."""
    todo = [("", tree)]
    while todo:
        prefix, node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _FUNCS + (ast.ClassDef,)):
                name = prefix + child.name
                if isinstance(child, _FUNCS):
                    yield name, child
                todo.append((name + ".", child))
            else:
                todo.append((prefix, child))


def check_module(rel, source, tree):
    found = []
    n = len(source.splitlines())
    if n > MAX_MODULE_LINES:
        found.append(Violation("module-length", rel, 1, "", n, MAX_MODULE_LINES))
    for name, fn in _functions(tree):
        length = fn.end_lineno - fn.lineno + 1
        if length > MAX_FUNCTION_LINES:
            found.append(Violation("function-length", rel, fn.lineno, name, length,
                                   MAX_FUNCTION_LINES))
        depth = block_depth(fn.body)
        if depth > MAX_NESTING:
            found.append(Violation("nesting", rel, fn.lineno, name, depth, MAX_NESTING))
    return sorted(found, key=lambda v: (v.line, v.kind))


def imports_of(modname, is_package, tree, modules):
    """{imported firmware module: first line importing it} for one module."""
    out = {}

    def add(target, line):
        if target in modules and target != modname:
            out.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = modname.split(".")
                if not is_package:
                    pkg = pkg[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                sub = base + "." + a.name if base else a.name
                add(sub if sub in modules else base, node.lineno)
    return out


def circles(graph):
    """Every elementary cycle of graph {node: {node: line}}, each as a list of nodes starting
    at its smallest node. The firmware's graph is a few dozen nodes, so plain search does."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ()), reverse=True):
                if nxt == start:
                    found.append(path)
                elif nxt > start and nxt not in path:
                    stack.append((nxt, path + [nxt]))
    return sorted(found)


def check(root):
    """Every violation under root, in a stable order."""
    modules = module_files(root)
    found, graph = [], {}
    for mod, rel in sorted(modules.items()):
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source, rel)
        found += check_module(rel, source, tree)
        graph[mod] = imports_of(mod, rel.endswith("__init__.py"), tree, modules)
    for cycle in circles(graph):
        ring = cycle + [cycle[0]]
        where = ", ".join("%s:%d" % (modules[a], graph[a][b]) for a, b in zip(ring, ring[1:]))
        found.append(Violation("circle", modules[cycle[0]], graph[cycle[0]][cycle[1]],
                               " -> ".join(ring), len(cycle), 0, where))
    return found


def main(argv):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = argv[1] if len(argv) > 1 else os.path.join(here, "firmware")
    found = check(root)
    for v in found:
        print(v)
    n_circles = sum(1 for v in found if v.kind == "circle")
    print("shape: %d violation(s), %d import circle(s) in %s"
          % (len(found), n_circles, os.path.relpath(root)))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
