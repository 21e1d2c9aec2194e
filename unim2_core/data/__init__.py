"""Raw frames in, backbone input out: modality encodings, image files, preprocessing, datasets.

May import: ``unim2_core.errors`` and ``unim2_core.atomic``. Nothing here knows about models.
"""
