"""Gait attribute tagging (CLIP-GAR): the 15 RA-GAR attributes of every gait segment.

Modules: ``table`` (attributes, classes, template sentences), ``model`` (visual encoder, Align and
Fusion stages, classification baseline), ``checkpoint``, ``stage`` (:class:`AttributeTagger`),
``query`` (attribute filters over exported records). Training: :mod:`training.attributes`;
evaluation: :mod:`evaluation.attributes`.
"""
