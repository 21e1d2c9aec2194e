"""The network and what it is trained with: frozen backbone and its weight files, the trainable
heads, the cross-modal correspondence loss, and the checkpoint bundle.

May import: ``unim2_core.data`` and the base modules (``errors``, ``atomic``).
"""
