"""The load pipeline, one stage per module.

``_plan`` (a load verb's arguments -> a :class:`~prolific_ingest.pipeline._run.LoadPlan`,
the incremental watermark policy, :func:`~prolific_ingest.pipeline._plan.load_export`),
``_run`` (the plan -> a cache hit, or resolve (``exports._resolve``) -> wait -> download
-> parse -> commit), ``_fetch`` (the download into a staging file, the cache commit) and ``_parse`` (the
parse, the parsed-table cache and the hand-over to a sink, the lake sink). Nothing is
re-exported: import the module that defines a name, so a patch hits where it is read.
"""
