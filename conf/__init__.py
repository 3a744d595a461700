"""repro's default config: installed as the package `repro._conf` (pyproject.toml) for `repro init` to copy.

Only the YAML here is a project's config; this file exists so that an editable install can import
the mapped package (setuptools' editable finder does not map namespace packages to other folders).
"""
