"""Deep zoom over HTTP: an IIIF Image API 3.0 server whose pixels come from LIIF, and a viewer page."""
