"""The shipped hardware profiles, one TOML file per target (data only, no code).

The wheel installs this folder as the package ``edgeopt.profile_files``; ``edgeopt.profiles``
finds the files with ``importlib.resources``.
"""
