"""Built-in task families, one subpackage each: ``classification``, ``detection``
and ``lanes`` (each exports its Task and config class).  ``common`` holds the data
helpers they share.  Tasks are found through the ``prunebench.tasks`` entry points,
not by importing this package."""
