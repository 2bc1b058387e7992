"""Many shot folders rendered once each, in this process or as Ray tasks.

``plan`` (driver: where videos go, the resume key, what is left), ``worker`` (rendering one
shot, here or on a Ray worker), ``runners`` (the local and Ray runners, ``run_batch``). The
command line is ``engine.cli.batch``.
"""
