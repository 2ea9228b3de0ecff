"""Model definitions; importing this package registers every model name."""

from liif.models import edsr, liif, lte, metasr, mlp, rdn  # noqa: F401
from liif.models.implicit import ImplicitModel
from liif.models.liif import LIIF
from liif.models.lte import LTE
from liif.models.metasr import MetaSR

__all__ = ["ImplicitModel", "LIIF", "LTE", "MetaSR"]
