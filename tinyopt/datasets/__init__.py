"""Datasets: every supported source read into x_train, y_train, x_test, y_test, and checked.

`idx` (IDX files: the built-in datasets and their checksums, a user's IDX directory), `download` (a
built-in dataset's files from its local copy or a mirror), `npz` (a user's .npz), `images` (a user's
folders of images, one per class), `sources` (a dataset's arrays, whatever its source), `checks` (the
arrays' shapes and values, and everything about the data that can fail a run), `labels`
(classification labels), `split` (the seeded train / validation split), `prepared` (the prepared split,
read back). The steps that run them (fetch, prepare) are in tasks/data.py.
"""
