"""Training jobs on Ray Train: standalone detectors, the OPANAS super-net, FAD's DARTS search.

Import the job modules directly (``raynas.training.standalone``, ``.supernet``, ``.darts``); this
package's ``__init__`` stays import-light so Ray-free code can use ``config``/``inputs`` (and Ray
workers can run ``ray_hooks`` at start-up without importing the jobs).
"""
