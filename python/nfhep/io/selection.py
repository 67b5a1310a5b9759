"""Selections (cut expressions) in the syntax physicists type.

uproot evaluates cuts as Python/NumPy expressions, where ``&`` binds tighter than ``>``, so
``px > 0 & py < 1`` silently means ``px > (0 & py) < 1``. nfhep accepts the ROOT ``TTree::Draw``
spelling (``&&``, ``||``, ``!``) as well as Python's ``and``/``or``/``not`` with their usual low
precedence, and rewrites the expression into the fully parenthesised element-wise form uproot needs:

    ``px > 0 && abs(py) < 2 || !(pz > 1)``  →  ``((px > 0) & (abs(py) < 2)) | (~(pz > 1))``

Plain uproot expressions (``(px > 0) & (py < 1)``) pass through unchanged in meaning.
"""

from __future__ import annotations

import ast
import re

from .errors import SelectionError

__all__ = ["translate_selection"]

# `!` that is not part of `!=`
_NOT = re.compile(r"!(?!=)")


class _ElementWise(ast.NodeTransformer):
    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        op: ast.operator = ast.BitAnd() if isinstance(node.op, ast.And) else ast.BitOr()
        out = node.values[0]
        for value in node.values[1:]:
            out = ast.BinOp(left=out, op=op, right=value)
        return out

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.UnaryOp(op=ast.Invert(), operand=node.operand)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        # a < b < c  ->  (a < b) & (b < c), element-wise
        parts = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(ast.Compare(left=left, ops=[op], comparators=[right]))
            left = right
        out = parts[0]
        for part in parts[1:]:
            out = ast.BinOp(left=out, op=ast.BitAnd(), right=part)
        return out


def translate_selection(selection: str) -> str:
    """Rewrite a cut expression into uproot's element-wise Python form.

    Parameters
    ----------
    selection : str
        E.g. ``"px > 0 && abs(py) < 2"`` (ROOT style), ``"px > 0 and py < 2"`` or
        ``"(px > 0) & (py < 2)"`` (uproot style). Chained comparisons ``0 < px < 1`` work.

    Returns
    -------
    str
        An equivalent expression where ``and``/``or``/``not`` became ``&``/``|``/``~`` with explicit
        parentheses.

    Raises
    ------
    SelectionError
        If the expression is not valid syntax.
    """
    if not isinstance(selection, str) or not selection.strip():
        raise SelectionError(f"selection must be a non-empty string, got {selection!r}")
    text = selection.replace("&&", " and ").replace("||", " or ")
    text = _NOT.sub(" not ", text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise SelectionError(
            f"selection {selection!r} is not a valid expression ({err.msg}); write it like "
            "'px > 0 && abs(py) < 2' or '(px > 0) & (py < 2)'"
        ) from None
    tree = ast.fix_missing_locations(_ElementWise().visit(tree))
    # ast.unparse parenthesises by precedence; wrap comparisons explicitly for readability/safety
    return _paren(tree.body)


def _paren(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        sym = "&" if isinstance(node.op, ast.BitAnd) else "|"
        return f"({_paren(node.left)}) {sym} ({_paren(node.right)})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return f"~({_paren(node.operand)})"
    return ast.unparse(node)
