"""The jobs the experiments compose from the library, above training and search: the main job (OPANAS end
to end: ``main_job``), the super-net scoring of fixed architectures (``supernet_scores``) and the standalone
arms every evidence table trains and reports on the test split (``arms``). The scripts in ``experiments/``
only parse flags into these; one script never imports another."""
