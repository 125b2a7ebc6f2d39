"""Commands: the ``parity`` console command, one module per subcommand (as asv's ``commands/``).

- :mod:`.cli`: the table of subcommands, the parser built from it, exit codes, Ctrl-C;
- :mod:`.command`: :class:`~parity.commands.command.Command` (help, description, options, handler);
- one module per subcommand, named after it: ``run``, ``report``, ``bisection`` (``parity
  bisect``), ``check``, ``dump``, ``compare``, ``backends``, ``new_backend``, ``bench``,
  ``nightly``, ``dashboard``, ``reduce``, ``locate``, ``stages``, ``faults`` (``locate`` and
  ``reduce`` plug in the tools of :mod:`parity.locate` and :mod:`parity.reduce`);
- :mod:`.run_options`: the run options several subcommands share, and parsed options -> spec,
  run, stages, tiers; :mod:`.output_files`: outputs refused before any work, written all or none;
- :mod:`.entry`: the console script, Ctrl-C guarded from the first heavy import.

Kept free of imports: ``entry`` guards Ctrl-C from the first heavy import.
"""
