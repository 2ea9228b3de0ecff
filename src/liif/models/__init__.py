"""Model definitions; importing this package registers every model name."""

from liif.models import edsr, liif, lte, metasr, mlp, rdn  # noqa: F401
from liif.models.implicit import ImplicitModel
from liif.models.liif import LIIF

__all__ = ["ImplicitModel", "LIIF"]
