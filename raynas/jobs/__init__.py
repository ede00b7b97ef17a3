"""The jobs the experiments compose from the library, above training and search: the main job (OPANAS end
to end) and the super-net scoring of fixed architectures. The scripts in ``experiments/`` only parse
flags into these; one script never imports another."""
