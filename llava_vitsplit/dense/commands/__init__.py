"""Console sub-commands of the dense package (``llava-vitsplit dense-train`` etc.); each has ``main(argv)``."""
