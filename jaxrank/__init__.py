"""jaxrank: learning to order the cells of Jupyter notebooks with JAX/Flax."""

__version__ = "0.1.0"
