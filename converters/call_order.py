"""The order in which Keras 3 runs a functional model's layer calls, where the order changes results.

Keras layers are pure functions of their inputs and masks, so any topological order gives the same
numbers, with one exception: Keras 3's ``MultiHeadAttention`` deletes the Keras masks of the tensors
it reads, and a layer run after it sees those tensors unmasked. For models with such a layer the
graph's nodes are emitted in the order Keras 3's ``Functional`` runs them
(``keras.src.ops.function.map_graph``):

1. a depth-first walk from the outputs, in output order, through each call's input tensors (the
   positional ones, then the keyword ones sorted by name), lists the calls inputs-first;
2. walking that list backwards, a call gets depth 0 (or its layer's depth, if larger), and each
   call producing one of its inputs at least its depth + 1;
3. calls run by decreasing depth, and at one depth in the order step 2 first gave them a depth.

The runtime keeps a given order when it is topological, so emitting this order is enough.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["keras3_call_order"]

Key = tuple[str, int]  # (layer name, call index)


def _refs(value: Any) -> list[Key]:
    """The producing calls of every tensor reference in a wired node argument, in order."""
    if isinstance(value, (list, tuple)):
        if len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int) and isinstance(value[2], int):
            return [(value[0], value[1])]
        return [key for v in value for key in _refs(v)]
    return []


def _parents(node: Mapping[str, Any]) -> list[Key]:
    """The calls whose outputs a wired node reads: positional inputs, then keywords by name."""
    keys = _refs(node["inputs"])
    for name in sorted(node.get("kwargs", {})):
        keys += _refs(node["kwargs"][name])
    return keys


def keras3_call_order(nodes: Sequence[Mapping[str, Any]], outputs: Sequence[Sequence[Any]]) -> list[int]:
    """Indices into ``nodes`` (wired graph nodes, calls of a layer in call order) in Keras 3's run
    order; the given order when Keras' would call a shared layer's calls out of order."""
    calls: dict[str, int] = {}
    keys: list[Key] = []
    for node in nodes:
        layer = node["layer"]
        keys.append((layer, calls.get(layer, 0)))
        calls[layer] = calls.get(layer, 0) + 1
    index = {key: k for k, key in enumerate(keys)}

    # 1. Depth-first from the outputs: calls listed after the calls they read.
    listed: list[Key] = []
    seen: set[Key] = set()
    for ref in outputs:
        root = (str(ref[0]), int(ref[1]))
        if root not in index or root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(_parents(nodes[index[root]])))]
        while stack:
            key, pending = stack[-1]
            for parent in pending:
                if parent in index and parent not in seen:
                    seen.add(parent)
                    stack.append((parent, iter(_parents(nodes[index[parent]]))))
                    break
            else:
                stack.pop()
                listed.append(key)

    # 2. Depths, assigned walking the list backwards.
    depth_of: dict[Key, int] = {}
    layer_depth: dict[str, int] = {}
    for key in reversed(listed):
        depth = max(depth_of.setdefault(key, 0), layer_depth.get(key[0], 0))
        layer_depth[key[0]] = depth_of[key] = depth
        for parent in _parents(nodes[index[key]]):
            if parent in index:
                depth_of[parent] = max(depth + 1, depth_of.get(parent, 0))

    # 3. Decreasing depth; at one depth, the order the depths were first given.
    order = sorted(depth_of, key=lambda key: -depth_of[key])  # sorted() is stable
    ordered = [index[key] for key in order] + [k for k, key in enumerate(keys) if key not in depth_of]
    last_call: dict[str, int] = {}
    for k in ordered:
        layer, call = keys[k]
        if call < last_call.get(layer, -1):
            return list(range(len(nodes)))
        last_call[layer] = call
    return ordered
