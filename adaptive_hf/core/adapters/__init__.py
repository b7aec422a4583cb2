"""One adapter per backbone family, serving every technique (see :mod:`adaptive_hf.core.adapters.base`)."""
