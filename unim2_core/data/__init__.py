"""Raw frames in, backbone input out: modality encodings, image files, the one preprocessing
path, camera intrinsics and metric depth, online HHA, and the dataset readers with their
registry (``datasets/``).

May import: the base modules (``errors``, ``atomic``, ``schema``, ``device``, ``torch_files``).
Nothing here knows about models.
"""
