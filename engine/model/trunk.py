"""An ensemble's members run the backbone layers they share once: the same embeddings, less work.

Seeds of one recipe fine-tune only the backbone's last layers (a catalog's ``training.fit``
trains the last 30: ``ModelConfig.train_backbone``) and an ensemble's ImageNet member is that
backbone untrained, so every member of such an ensemble (``engine.model.ensemble.build_ensemble``)
starts with the same layers holding the same weights: on IKEA's recipe, 124 of MobileNetV2's 154.
``share_trunk`` rebuilds the ensemble so that this common trunk runs once per crop and only each
member's own tail, its head and the ensemble's joining run per member. Nothing is approximated: a
layer is shared only when its class, configuration and every weight are identical in all members,
and each member's tail reads exactly the tensors its own backbone would have computed there.

The saved ``.keras`` file keeps the plain ensemble (``training.distill`` and ``at_input_size``
read its members); ``engine.model.embedder.Embedder.load`` shares the trunk when it loads one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np

from engine.model.network import BACKBONE_LAYER

TRUNK_SUFFIX = "_shared_trunk"  # the name of the shared layers' model inside a rebuilt ensemble: <ensemble>_shared_trunk

logger = logging.getLogger(__name__)


def _only_node(op) -> object | None:
    """The one node where ``op`` is called in its graph (None when it is called more than once)."""
    nodes = op._inbound_nodes
    return nodes[0] if len(nodes) == 1 else None


def _config(layer: keras.Layer) -> dict:
    """What a layer computes: its configuration but its name and whether it was trained (a frozen
    layer of a fine-tuned member computes what the same layer of the ImageNet member does)."""
    return {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}


def _same_layer(layers: Sequence[keras.Layer]) -> bool:
    """Whether ``layers`` (one per member, at one place of their graphs) compute the same function."""
    first = layers[0]
    if any(type(x) is not type(first) or _config(x) != _config(first) for x in layers[1:]):
        return False
    weights = [[np.asarray(w) for w in x.get_weights()] for x in layers]
    return all(len(w) == len(weights[0]) and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(w, weights[0]))
               for w in weights[1:])


def _members(model: keras.Model) -> list[keras.Model] | None:
    """The nested embedders of an ensemble model, each called once on its input (None otherwise)."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(members) < 2:
        return None
    for m in members:
        node = _only_node(m)
        if node is None or len(node.input_tensors) != 1 or node.input_tensors[0] is not model.inputs[0]:
            return None
        try:
            backbone = m.get_layer(BACKBONE_LAYER)
        except ValueError:
            return None
        if not isinstance(backbone, keras.Model) or _only_node(backbone) is None:
            return None
    return members


def _wiring(backbone: keras.Model, nodes: Sequence) -> tuple:
    """The backbone's graph as layer indices: each layer's class and configuration and the
    (layer, output) indices it reads."""
    where = {id(t): (j, o) for j, node in enumerate(nodes) for o, t in enumerate(node.output_tensors)}
    return tuple((type(layer).__name__, repr(sorted(_config(layer).items())), tuple(where.get(id(t)) for t in node.input_tensors))
                 for layer, node in zip(backbone.layers, nodes))


def has_shared_trunk(model: keras.Model) -> bool:
    """Whether ``model`` is an ensemble rebuilt by ``share_trunk``."""
    return any(isinstance(layer, keras.Model) and layer.name.endswith(TRUNK_SUFFIX) for layer in model.layers)


def shared_prefix(backbones: Sequence[keras.Model]) -> int:
    """How many leading layers (``backbone.layers``, in graph order) all ``backbones`` hold identically."""
    depth = min(len(b.layers) for b in backbones)
    for j in range(depth):
        if not _same_layer([b.layers[j] for b in backbones]):
            return j
    return depth


def share_trunk(model: keras.Model, min_layers: int = 2) -> tuple[keras.Model, int] | None:
    """``model`` (an ensemble of ``build_ensemble``: ``float32 (B, S, S, 3)`` → ``float32 (B, D)``)
    rebuilt so that the backbone layers its members share run once, with the number of layers
    shared; None when it is not such an ensemble, its members' inputs reach their backbones
    differently, or they share fewer than ``min_layers`` backbone layers. The result computes the
    same function with the same layer objects (no weights are copied)."""
    members = _members(model)
    if members is None:
        return None
    backbones = [m.get_layer(BACKBONE_LAYER) for m in members]
    feeds = [_only_node(b).parent_nodes for b in backbones]  # the layer each member feeds its backbone from
    if any(len(f) != 1 for f in feeds):
        return None
    feed_layers = [f[0].operation for f in feeds]
    if not _same_layer(feed_layers) or any(
            len(f[0].input_tensors) != 1 or f[0].input_tensors[0] is not m.inputs[0] for f, m in zip(feeds, members)):
        return None  # each must prepare the member's own input the same way
    nodes = [[_only_node(layer) for layer in b.layers] for b in backbones]
    if any(len(b.outputs) != 1 for b in backbones) or any(n is None for ns in nodes for n in ns) \
            or len({_wiring(b, ns) for b, ns in zip(backbones, nodes)}) != 1:
        return None  # the members' backbones are not one architecture, wired the same way
    cut = shared_prefix(backbones)
    if cut < min_layers:
        return None
    # the tensors the shared layers hand to the rest: (layer index, output index), in a fixed order
    crossing: list[tuple[int, int]] = []
    produced = {id(t): (j, o) for j, node in enumerate(nodes[0][:cut]) for o, t in enumerate(node.output_tensors)}
    for node in nodes[0][cut:]:
        for t in node.input_tensors:
            key = produced.get(id(t))
            if key is not None and key not in crossing:
                crossing.append(key)
    out_key = produced.get(id(backbones[0].outputs[0]))
    if out_key is not None and out_key not in crossing:
        crossing.append(out_key)

    def tensors(i: int) -> list:
        return [nodes[i][j].output_tensors[o] for j, o in crossing]

    name = model.name
    one = len(crossing) == 1
    trunk = keras.Model(backbones[0].inputs[0], tensors(0)[0] if one else tensors(0), name=f"{name}{TRUNK_SUFFIX}")
    inp = keras.Input(model.inputs[0].shape[1:], name="image", dtype=model.inputs[0].dtype)
    handed = trunk(feed_layers[0](inp))
    outputs = []
    for i, (m, b) in enumerate(zip(members, backbones)):
        if cut == len(b.layers):  # the whole backbone is shared
            features = handed if one else handed[crossing.index(out_key)]
        else:
            tail = keras.Model(tensors(i)[0] if one else tensors(i), b.outputs[0], name=f"{name}_tail_{i}")
            features = tail(handed)
        own = _only_node(b).output_tensors[0]  # the backbone's output in the member's graph
        head = keras.Model([m.inputs[0], own], m.outputs[0], name=f"{name}_head_{i}")  # an unread input is allowed
        outputs.append(head([inp, features]))
    rest = keras.Model([_only_node(m).output_tensors[0] for m in members], model.outputs[0], name=f"{name}_join")
    shared = keras.Model(inp, rest(outputs), name=name)
    logger.info("%s: its %d members share %d of %d backbone layers, run once a crop",
                name, len(members), cut, len(backbones[0].layers))
    return shared, cut
