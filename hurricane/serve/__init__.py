"""``manage.py serve``: the app server's lifecycle (:mod:`.server`), the supervisor of
``--processes`` (:mod:`.supervisor`), one core per process (:mod:`.affinity`) and the
entry point that chooses among them (:mod:`.main`)."""
