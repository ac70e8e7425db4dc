"""Gait attribute tagging (CLIP-GAR): the 15 RA-GAR attributes of every gait segment.

Modules: ``table`` (attributes, classes, template sentences), ``text`` (frozen text encoders, used at
training time only), ``model`` (visual encoder, Align and Fusion stages, classification baseline),
``checkpoint``, ``data`` (synthetic training clips), ``train``, ``evaluate``, ``metrics``,
``stage`` (:class:`AttributeTagger`), ``query`` (attribute filters and the JSONL query command).
"""
